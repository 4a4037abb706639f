//! ShareGroupHeartbeat (KIP-932): a member joins, stays in, or leaves a
//! share group, and is told the partitions it may fetch from (which other
//! members may share).

use kafka_protocol::messages::share_group_heartbeat_response::{Assignment, TopicPartitions};
use kafka_protocol::messages::{ShareGroupHeartbeatRequest, ShareGroupHeartbeatResponse};
use kafka_protocol::protocol::StrBytes;

use crate::group::assignor::{self, TopicShape};
use crate::group::share::ShareHeartbeatParams;
use crate::{Broker, HandlerError, RequestContext};

pub(crate) async fn handle(
    broker: &Broker,
    ctx: &RequestContext,
    req: ShareGroupHeartbeatRequest,
) -> Result<ShareGroupHeartbeatResponse, HandlerError> {
    let params = ShareHeartbeatParams {
        member_id: req.member_id.to_string(),
        member_epoch: req.member_epoch,
        rack_id: req.rack_id.as_ref().map(|s| s.to_string()),
        subscribed_topic_names: req
            .subscribed_topic_names
            .map(|names| names.into_iter().map(|n| n.to_string()).collect()),
        client_id: ctx
            .header
            .client_id
            .as_deref()
            .unwrap_or_default()
            .to_string(),
        client_host: ctx.client_host(),
    };
    let shape = |name: &str| {
        broker.topic(name).map(|t| TopicShape {
            id: t.meta.id,
            partitions: t.meta.partitions,
        })
    };
    let r = broker
        .groups()
        .share_heartbeat(&req.group_id, params, &shape);
    if let Some(assigned) = &r.assignment {
        start_share_partitions(broker, &req.group_id, assigned).await?;
    }
    let response = ShareGroupHeartbeatResponse::default()
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

/// Start the share-partitions of an assignment that this broker leads and
/// that have none yet, where the group's `share.auto.offset.reset` says
/// (the high watermark by default, as Kafka starts them when it assigns
/// them), written to
/// `__share_group_state` before the member hears of them: records produced
/// between the assignment and the member's first fetch are delivered.
async fn start_share_partitions(
    broker: &Broker,
    group: &str,
    assigned: &assignor::TopicPartitions,
) -> Result<(), HandlerError> {
    let group: std::sync::Arc<str> = std::sync::Arc::from(group);
    let mut new = Vec::new();
    for (topic_id, partitions) in assigned {
        for index in partitions {
            let tp = (*topic_id, *index);
            let key = super::share_fetch::share_key(&group, tp);
            if broker.shares().get(&key).is_some() {
                continue;
            }
            if let Ok(partition) = super::share_fetch::leader_partition(broker, tp) {
                new.push((key, partition));
            }
        }
    }
    if new.is_empty() {
        return Ok(());
    }
    let shares = broker.shares().clone();
    let waits = crate::blocking::run(move || {
        let reset = shares.group_settings(&group).offset_reset;
        let mut waits = Vec::new();
        for (key, partition) in new {
            let offsets = partition.offsets();
            let epoch = partition.leader_epoch();
            match shares.start(&key, epoch, || reset.start(offsets.log_start, offsets.high_watermark)) {
                Ok((_, wait)) => waits.extend(wait),
                Err(e) => {
                    tracing::warn!(group = %key.group, error = %e.message, "cannot start a share-partition");
                }
            }
        }
        waits
    })
    .await?;
    for wait in waits {
        if let Err(e) = wait.wait().await {
            tracing::warn!(error = %e, "a share-partition's start is not durable");
        }
    }
    Ok(())
}
