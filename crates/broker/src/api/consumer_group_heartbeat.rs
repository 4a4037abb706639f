//! ConsumerGroupHeartbeat (KIP-848): a member joins, stays, or leaves a
//! consumer group, reports the partitions it owns, and is told its
//! assignment as computed on the server.

use std::collections::BTreeMap;

use kafka_protocol::messages::consumer_group_heartbeat_response::{Assignment, TopicPartitions};
use kafka_protocol::messages::{ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse};
use kafka_protocol::protocol::StrBytes;

use kafka_protocol::ResponseError;
use weir_auth::AclOperation;

use crate::group::assignor::TopicShape;
use crate::group::consumer::HeartbeatParams;
use crate::{Broker, HandlerError, RequestContext};

pub(crate) async fn handle(
    broker: &Broker,
    ctx: &RequestContext,
    req: ConsumerGroupHeartbeatRequest,
) -> Result<ConsumerGroupHeartbeatResponse, HandlerError> {
    // Kafka checks READ on the group, then DESCRIBE on each topic the
    // member subscribes to by name.
    let denied = if !broker.allowed_on_group(ctx, AclOperation::Read, &req.group_id) {
        Some((
            ResponseError::GroupAuthorizationFailed,
            format!(
                "{} may not read group '{}'",
                ctx.principal,
                req.group_id.as_str()
            ),
        ))
    } else {
        req.subscribed_topic_names
            .iter()
            .flatten()
            .find(|name| !broker.allowed_on_topic(ctx, AclOperation::Describe, name))
            .map(|name| {
                (
                    ResponseError::TopicAuthorizationFailed,
                    format!(
                        "{} may not describe topic '{}'",
                        ctx.principal,
                        name.as_str()
                    ),
                )
            })
    };
    if let Some((error, message)) = denied {
        return Ok(ConsumerGroupHeartbeatResponse::default()
            .with_error_code(error.code())
            .with_error_message(Some(StrBytes::from_string(message))));
    }
    let owned = req.topic_partitions.map(|topics| {
        let mut out: BTreeMap<uuid::Uuid, std::collections::BTreeSet<i32>> = BTreeMap::new();
        for t in topics {
            out.entry(t.topic_id).or_default().extend(t.partitions);
        }
        out
    });
    let params = HeartbeatParams {
        member_id: req.member_id.to_string(),
        member_epoch: req.member_epoch,
        instance_id: req.instance_id.as_ref().map(|s| s.to_string()),
        rack_id: req.rack_id.as_ref().map(|s| s.to_string()),
        rebalance_timeout_ms: req.rebalance_timeout_ms,
        subscribed_topic_names: req
            .subscribed_topic_names
            .map(|names| names.into_iter().map(|n| n.to_string()).collect()),
        server_assignor: req.server_assignor.as_ref().map(|s| s.to_string()),
        owned,
        client_id: ctx
            .header
            .client_id
            .as_deref()
            .unwrap_or_default()
            .to_string(),
        client_host: ctx.client_host(),
        fresh_member_id: uuid::Uuid::new_v4().to_string(),
    };
    let shape = |name: &str| {
        broker.topic(name).map(|t| TopicShape {
            id: t.meta.id,
            partitions: t.meta.partitions,
        })
    };
    let r = broker
        .groups()
        .consumer_heartbeat(&req.group_id, params, &shape);
    let response = ConsumerGroupHeartbeatResponse::default()
        .with_throttle_time_ms(0)
        .with_member_id(Some(StrBytes::from_string(r.member_id)))
        .with_member_epoch(r.member_epoch)
        .with_heartbeat_interval_ms(r.heartbeat_interval_ms);
    if let Some((error, message)) = r.error {
        return Ok(response
            .with_error_code(error.code())
            .with_error_message(Some(StrBytes::from_string(message))));
    }
    Ok(response
        .with_error_code(0)
        .with_assignment(r.assignment.map(|a| {
            Assignment::default().with_topic_partitions(
                a.into_iter()
                    .map(|(topic_id, partitions)| {
                        TopicPartitions::default()
                            .with_topic_id(topic_id)
                            .with_partitions(partitions.into_iter().collect())
                    })
                    .collect(),
            )
        })))
}
