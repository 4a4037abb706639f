//! ShareAcknowledge (KIP-932): a share group member acknowledges records
//! it acquired, without fetching more. It needs the member's share session
//! on this broker (epoch 0 would open one, so it is refused); epoch -1
//! closes the session after the acknowledgements, releasing what the
//! member still held. From version 2 (KIP-1222) an acknowledgement may
//! renew a lock, and the answer says how long a lock lasts.

use std::collections::BTreeMap;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::share_acknowledge_response::{
    LeaderIdAndEpoch, NodeEndpoint, PartitionData, ShareAcknowledgeTopicResponse,
};
use kafka_protocol::messages::{ShareAcknowledgeRequest, ShareAcknowledgeResponse};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use super::share_fetch::{
    Acks, LeaderHint, apply_acks, leader_hint, led_acks, parse_acks, renew_allowed, session_key,
    session_message,
};
use crate::error::ApiError;
use crate::{Broker, HandlerError, RequestContext};

pub(crate) async fn handle(
    broker: &Broker,
    ctx: &RequestContext,
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
    if !broker.allowed_on_group(ctx, weir_auth::AclOperation::Read, &key.0) {
        return Ok(fail(
            ResponseError::GroupAuthorizationFailed,
            "this client may not read the share group",
        ));
    }
    let unreadable =
        super::share_fetch::unreadable_topics(broker, ctx, req.topics.iter().map(|t| t.topic_id));
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
                let parsed = match unreadable.get(&topic.topic_id) {
                    Some(denied) => Err(denied.clone()),
                    None => parse_acks(batches, renew_allowed(ctx.version)),
                };
                ((topic.topic_id, p.partition_index), parsed)
            })
        })
        .collect();
    // A closed session releases what the member still held.
    let released = vec![(key.clone(), step.left)];
    let mut topics: BTreeMap<Uuid, Vec<PartitionData>> = BTreeMap::new();
    let settings = std::sync::Arc::new(shares.group_settings(&key.0));
    let lock_ms = i32::try_from(settings.partition.record_lock_duration_ms).unwrap_or(i32::MAX);
    let acks = led_acks(broker, acks);
    let answered = apply_acks(shares, &key, acks, released, &settings).await?;
    let hints: Vec<Option<LeaderHint>> = answered
        .iter()
        .map(|(tp, error)| {
            error
                .as_ref()
                .filter(|e| e.code == ResponseError::NotLeaderOrFollower)
                .and_then(|_| leader_hint(broker, &ctx.listener, *tp))
        })
        .collect();
    let endpoints = LeaderHint::endpoints(hints.iter().flatten());
    for (((topic_id, index), error), hint) in answered.into_iter().zip(hints) {
        let (leader_id, leader_epoch) = LeaderHint::id_epoch(hint.as_ref());
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
                        .with_leader_id(leader_id)
                        .with_leader_epoch(leader_epoch),
                ),
        );
    }
    Ok(ShareAcknowledgeResponse::default()
        .with_throttle_time_ms(0)
        .with_error_code(0)
        .with_acquisition_lock_timeout_ms(lock_ms)
        .with_responses(
            topics
                .into_iter()
                .map(|(topic_id, partitions)| {
                    ShareAcknowledgeTopicResponse::default()
                        .with_topic_id(topic_id)
                        .with_partitions(partitions)
                })
                .collect(),
        )
        .with_node_endpoints(
            endpoints
                .into_iter()
                .map(|(id, host, port)| {
                    NodeEndpoint::default()
                        .with_node_id(id.into())
                        .with_host(StrBytes::from_string(host))
                        .with_port(port)
                })
                .collect(),
        ))
}
