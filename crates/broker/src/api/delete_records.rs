//! DeleteRecords (API key 21): advance partitions' log-start offsets, so
//! records below the given offset are no longer readable (offset -1 means
//! the high watermark). Each partition answers with its new low watermark.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse};

use weir_storage::Partition;

use weir_auth::AclOperation;

use crate::acls::topic_denied;
use crate::error::ApiError;
use crate::topics::{internal_topic_refused, is_internal};
use crate::{Broker, HandlerError, RequestContext};

/// The offset that means "up to the high watermark".
const OFFSET_HIGH_WATERMARK: i64 = -1;

pub(crate) async fn handle(
    broker: &Broker,
    ctx: &RequestContext,
    req: DeleteRecordsRequest,
) -> Result<DeleteRecordsResponse, HandlerError> {
    // Deletion is durable when `delete_records_before_many` returns, so there
    // is nothing for `timeout_ms` to bound.
    let mut outcomes: Vec<Result<i64, ApiError>> = Vec::new();
    // The checked partitions, moved together: one sync and one checkpoint
    // for the whole request.
    let mut moves = Vec::new();
    let mut slots = Vec::new();
    for topic in &req.topics {
        let name = topic.name.0.as_str();
        let deletable = broker.allowed_on_topic(ctx, AclOperation::Delete, name);
        for p in &topic.partitions {
            let checked = match deletable {
                true => check(broker, name, p.partition_index, p.offset),
                false => Err(topic_denied(ctx, AclOperation::Delete, name)),
            };
            match checked {
                Ok(item) => {
                    slots.push(outcomes.len());
                    moves.push(item);
                    // Filled in once the moves below are done.
                    outcomes.push(Ok(-1));
                }
                Err(err) => outcomes.push(Err(err)),
            }
        }
    }
    let moved = broker.log().delete_records_before_many(&moves);
    for (slot, result) in slots.into_iter().zip(moved) {
        if let Some(outcome) = outcomes.get_mut(slot) {
            *outcome = result.map_err(ApiError::from);
        }
    }
    let mut outcomes = outcomes.into_iter();
    let topics = req
        .topics
        .into_iter()
        .map(|topic| {
            let partitions = topic
                .partitions
                .iter()
                .map(|p| {
                    let outcome = outcomes.next().unwrap_or(Ok(-1));
                    let (low_watermark, error_code) = match outcome {
                        Ok(low) => (low, 0),
                        Err(err) => {
                            tracing::debug!(topic = %topic.name.0, partition = p.partition_index, error = %err, "delete records refused");
                            (-1, err.code())
                        }
                    };
                    DeleteRecordsPartitionResult::default()
                        .with_partition_index(p.partition_index)
                        .with_low_watermark(low_watermark)
                        .with_error_code(error_code)
                })
                .collect();
            DeleteRecordsTopicResult::default()
                .with_name(topic.name)
                .with_partitions(partitions)
        })
        .collect();
    Ok(DeleteRecordsResponse::default().with_topics(topics))
}

/// The partition whose records below `offset` are to be deleted, and the
/// offset to move its log start to.
fn check(
    broker: &Broker,
    topic: &str,
    partition: i32,
    offset: i64,
) -> Result<(Partition, i64), ApiError> {
    if is_internal(topic) {
        return Err(internal_topic_refused("delete records of", topic));
    }
    if let Some(state) = broker.topic(topic) {
        crate::view::refuse_if_view(&state, "delete records of")?;
    }
    let handle = broker.partition(topic, partition)?;
    let high_watermark = handle.offsets().high_watermark;
    let target = if offset == OFFSET_HIGH_WATERMARK {
        high_watermark
    } else {
        offset
    };
    if !(0..=high_watermark).contains(&target) {
        return Err(ApiError::new(
            ResponseError::OffsetOutOfRange,
            format!(
                "cannot delete records of {topic}-{partition} before offset {offset}: \
                 the high watermark is {high_watermark}"
            ),
        ));
    }
    Ok((handle, target))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::admin::str_bytes;
    use crate::admin::testing::{self, batch, call};
    use kafka_protocol::messages::delete_records_request::{
        DeleteRecordsPartition, DeleteRecordsTopic,
    };
    use kafka_protocol::messages::{ApiKey, TopicName};

    /// A topic whose one partition holds `count` durable records.
    async fn filled(t: &testing::TestBroker, topic: &str, count: i64) {
        t.broker
            .create_topic(topic, 1, 1, BTreeMap::new(), false)
            .unwrap();
        let partition = t.broker.partition(topic, 0).unwrap();
        let outcome = partition.append(batch(count)).unwrap();
        outcome.durable.wait().await.unwrap();
        assert_eq!(partition.offsets().high_watermark, count);
    }

    fn request(topic: &str, offsets: &[(i32, i64)]) -> DeleteRecordsRequest {
        DeleteRecordsRequest::default()
            .with_timeout_ms(5_000)
            .with_topics(vec![
                DeleteRecordsTopic::default()
                    .with_name(TopicName(str_bytes(topic)))
                    .with_partitions(
                        offsets
                            .iter()
                            .map(|&(partition, offset)| {
                                DeleteRecordsPartition::default()
                                    .with_partition_index(partition)
                                    .with_offset(offset)
                            })
                            .collect(),
                    ),
            ])
    }

    #[tokio::test]
    async fn every_version_advances_the_log_start_to_the_given_offset() {
        let t = testing::broker();
        for version in testing::versions(ApiKey::DeleteRecords) {
            let topic = format!("trimmed-v{version}");
            filled(&t, &topic, 10).await;
            let resp = call(&t.broker, version, request(&topic, &[(0, 4)])).await;
            let result = &resp.topics[0].partitions[0];
            assert_eq!(
                (result.error_code, result.low_watermark),
                (0, 4),
                "v{version}"
            );
            assert_eq!(
                t.broker.partition(&topic, 0).unwrap().offsets().log_start,
                4
            );
        }
    }

    #[tokio::test]
    async fn minus_one_deletes_up_to_the_high_watermark() {
        let t = testing::broker();
        filled(&t, "emptied", 5).await;
        let resp = call(&t.broker, 2, request("emptied", &[(0, -1)])).await;
        let result = &resp.topics[0].partitions[0];
        assert_eq!((result.error_code, result.low_watermark), (0, 5));
    }

    #[tokio::test]
    async fn beyond_the_high_watermark_is_out_of_range_and_unknown_is_unknown() {
        let t = testing::broker();
        filled(&t, "short", 3).await;
        let resp = call(&t.broker, 2, request("short", &[(0, 4), (0, -7), (5, 1)])).await;
        let codes: Vec<(i16, i64)> = resp.topics[0]
            .partitions
            .iter()
            .map(|p| (p.error_code, p.low_watermark))
            .collect();
        assert_eq!(
            codes,
            [
                (ResponseError::OffsetOutOfRange.code(), -1),
                (ResponseError::OffsetOutOfRange.code(), -1),
                (ResponseError::UnknownTopicOrPartition.code(), -1),
            ]
        );
        let resp = call(&t.broker, 2, request("nowhere", &[(0, 1)])).await;
        assert_eq!(
            resp.topics[0].partitions[0].error_code,
            ResponseError::UnknownTopicOrPartition.code()
        );
        assert_eq!(
            t.broker.partition("short", 0).unwrap().offsets().log_start,
            0
        );
    }
}
