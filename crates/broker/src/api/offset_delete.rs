//! OffsetDelete: drop a group's committed offsets of some partitions, unless
//! an active member still subscribes to the topic.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::{OffsetDeleteRequest, OffsetDeleteResponse};

use crate::{Broker, HandlerError, RequestContext};

pub(crate) async fn handle(
    broker: &Broker,
    _ctx: &RequestContext,
    req: OffsetDeleteRequest,
) -> Result<OffsetDeleteResponse, HandlerError> {
    let mut asked = Vec::new();
    let mut unknown = Vec::new();
    for topic in &req.topics {
        for p in &topic.partitions {
            let exists = broker.partition(&topic.name, p.partition_index).is_ok();
            unknown.push(!exists);
            if exists {
                asked.push((topic.name.to_string(), p.partition_index));
            }
        }
    }
    let response = OffsetDeleteResponse::default().with_throttle_time_ms(0);
    let results = match broker.groups().delete_offsets(&req.group_id, &asked).await {
        Ok(results) => results,
        Err(error) => return Ok(response.with_error_code(error.code())),
    };
    let mut results = results.into_iter();
    let mut unknown = unknown.into_iter();
    let topics = req
        .topics
        .into_iter()
        .map(|topic| {
            let partitions = topic
                .partitions
                .iter()
                .map(|p| {
                    let error = if unknown.next().unwrap_or(true) {
                        Some(ResponseError::UnknownTopicOrPartition)
                    } else {
                        results.next().flatten()
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
