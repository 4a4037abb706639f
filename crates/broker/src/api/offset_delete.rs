//! OffsetDelete: drop a group's committed offsets of some partitions, unless
//! an active member still subscribes to the topic.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::{OffsetDeleteRequest, OffsetDeleteResponse};

use weir_auth::AclOperation;

use crate::{Broker, HandlerError, RequestContext};

pub(crate) async fn handle(
    broker: &Broker,
    ctx: &RequestContext,
    req: OffsetDeleteRequest,
) -> Result<OffsetDeleteResponse, HandlerError> {
    let response = OffsetDeleteResponse::default().with_throttle_time_ms(0);
    if !broker.allowed_on_group(ctx, AclOperation::Delete, &req.group_id) {
        return Ok(response.with_error_code(ResponseError::GroupAuthorizationFailed.code()));
    }
    // Kafka deletes only the offsets of topics the client may read.
    let mut asked = Vec::new();
    let mut refused = Vec::new();
    for topic in &req.topics {
        let readable = broker.allowed_on_topic(ctx, AclOperation::Read, &topic.name);
        for p in &topic.partitions {
            let refusal = if !readable {
                Some(ResponseError::TopicAuthorizationFailed)
            } else if broker.partition(&topic.name, p.partition_index).is_err() {
                Some(ResponseError::UnknownTopicOrPartition)
            } else {
                None
            };
            if refusal.is_none() {
                asked.push((topic.name.to_string(), p.partition_index));
            }
            refused.push(refusal);
        }
    }
    let results = match broker.groups().delete_offsets(&req.group_id, &asked).await {
        Ok(results) => results,
        Err(error) => return Ok(response.with_error_code(error.code())),
    };
    let mut results = results.into_iter();
    let mut refused = refused.into_iter();
    let topics = req
        .topics
        .into_iter()
        .map(|topic| {
            let partitions = topic
                .partitions
                .iter()
                .map(|p| {
                    let error = match refused.next() {
                        Some(None) => results.next().flatten(),
                        Some(Some(refusal)) => Some(refusal),
                        None => Some(ResponseError::UnknownTopicOrPartition),
                    };
                    OffsetDeleteResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(error.map_or(0, |e| e.code()))
                })
                .collect();
            OffsetDeleteResponseTopic::default()
                .with_name(topic.name)
                .with_partitions(partitions)
        })
        .collect();
    Ok(response.with_error_code(0).with_topics(topics))
}
