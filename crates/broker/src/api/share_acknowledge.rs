//! ShareAcknowledge (KIP-932): a share group member acknowledges records
//! it acquired, without fetching more. It needs the member's share session
//! on this broker (epoch 0 would open one, so it is refused); epoch -1
//! closes the session after the acknowledgements, releasing what the
//! member still held.

use std::collections::BTreeMap;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::share_acknowledge_response::{
    LeaderIdAndEpoch, PartitionData, ShareAcknowledgeTopicResponse,
};
use kafka_protocol::messages::{ShareAcknowledgeRequest, ShareAcknowledgeResponse};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use super::share_fetch::{Acks, apply_acks, parse_acks, session_key, session_message};
use crate::error::ApiError;
use crate::{Broker, HandlerError, RequestContext};

pub(crate) async fn handle(
    broker: &Broker,
    _ctx: &RequestContext,
    req: ShareAcknowledgeRequest,
) -> Result<ShareAcknowledgeResponse, HandlerError> {
    let shares = broker.shares();
    let fail = |error: ResponseError, message: &str| {
        ShareAcknowledgeResponse::default()
            .with_error_code(error.code())
            .with_error_message(Some(StrBytes::from_string(message.to_string())))
    };
    let Some(key) = session_key(
        req.group_id.as_ref().map(|g| g.as_str()),
        req.member_id.as_ref().map(|m| m.as_str()),
    ) else {
        return Ok(fail(
            ResponseError::InvalidRequest,
            "a share acknowledgement names its group and member",
        ));
    };
    let step = match shares
        .sessions()
        .acknowledge(&key, req.share_session_epoch, shares.now_ms())
    {
        Ok(step) => step,
        Err(error) => return Ok(fail(error, session_message(error))),
    };
    let acks: Acks = req
        .topics
        .iter()
        .flat_map(|topic| {
            topic.partitions.iter().map(|p| {
                let batches = p.acknowledgement_batches.iter().map(|b| {
                    (
                        b.first_offset,
                        b.last_offset,
                        b.acknowledge_types.as_slice(),
                    )
                });
                ((topic.topic_id, p.partition_index), parse_acks(batches))
            })
        })
        .collect();
    // A closed session releases what the member still held.
    let released = vec![(key.clone(), step.left)];
    let mut topics: BTreeMap<Uuid, Vec<PartitionData>> = BTreeMap::new();
    let settings = std::sync::Arc::new(shares.group_settings(&key.0));
    for ((topic_id, index), error) in apply_acks(shares, &key, acks, released, &settings).await? {
        topics.entry(topic_id).or_default().push(
            PartitionData::default()
                .with_partition_index(index)
                .with_error_code(error.as_ref().map_or(0, ApiError::code))
                .with_error_message(
                    error
                        .as_ref()
                        .map(|e| StrBytes::from_string(e.message.clone())),
                )
                .with_current_leader(
                    LeaderIdAndEpoch::default()
                        .with_leader_id(-1)
                        .with_leader_epoch(-1),
                ),
        );
    }
    Ok(ShareAcknowledgeResponse::default()
        .with_throttle_time_ms(0)
        .with_error_code(0)
        .with_responses(
            topics
                .into_iter()
                .map(|(topic_id, partitions)| {
                    ShareAcknowledgeTopicResponse::default()
                        .with_topic_id(topic_id)
                        .with_partitions(partitions)
                })
                .collect(),
        ))
}
