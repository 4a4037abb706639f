//! ShareGroupHeartbeat (KIP-932): a member joins, stays in, or leaves a
//! share group, and is told the partitions it may fetch from (which other
//! members may share).

use kafka_protocol::messages::share_group_heartbeat_response::{Assignment, TopicPartitions};
use kafka_protocol::messages::{ShareGroupHeartbeatRequest, ShareGroupHeartbeatResponse};
use kafka_protocol::protocol::StrBytes;

use std::sync::Arc;

use kafka_protocol::ResponseError;
use weir_auth::AclOperation;

use crate::group::assignor::{self, TopicShape};
use crate::group::share::ShareHeartbeatParams;
use crate::share::session::TopicIdPartition;
use crate::{Broker, HandlerError, RequestContext};

pub(crate) async fn handle(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    req: ShareGroupHeartbeatRequest,
) -> Result<ShareGroupHeartbeatResponse, HandlerError> {
    // READ on the group, and DESCRIBE on each topic subscribed to.
    let denied = if !broker.allowed_on_group(ctx, AclOperation::Read, &req.group_id) {
        Some(ResponseError::GroupAuthorizationFailed)
    } else {
        req.subscribed_topic_names
            .iter()
            .flatten()
            .any(|name| !broker.allowed_on_topic(ctx, AclOperation::Describe, name))
            .then_some(ResponseError::TopicAuthorizationFailed)
    };
    if let Some(denied) = denied {
        return Ok(ShareGroupHeartbeatResponse::default().with_error_code(denied.code()));
    }
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

/// Start the share-partitions of an assignment that have none yet, where
/// the group's `share.auto.offset.reset` says (the high watermark by
/// default, as Kafka starts them when it assigns them), written to
/// `__share_group_state` before the member hears of them: records produced
/// between the assignment and the member's first fetch are delivered.
/// Those led here start here; on a cluster, those led elsewhere are asked
/// of their leaders at once (one try, for at most [`START_ELSEWHERE_FOR`]:
/// one not started then starts at its leader's first fetch).
async fn start_share_partitions(
    broker: &Arc<Broker>,
    group: &str,
    assigned: &assignor::TopicPartitions,
) -> Result<(), HandlerError> {
    let (here, elsewhere): (Vec<TopicIdPartition>, Vec<TopicIdPartition>) = assigned
        .iter()
        .flat_map(|(topic_id, partitions)| partitions.iter().map(move |p| (*topic_id, *p)))
        .partition(|tp| super::share_fetch::leader_partition(broker, *tp).is_ok());
    start_here(broker, group, here).await?;
    if !elsewhere.is_empty() && broker.metadata().replicated() {
        let asked = super::share_group_offsets::start_on_leaders(broker, group, elsewhere);
        if tokio::time::timeout(START_ELSEWHERE_FOR, asked)
            .await
            .is_err()
        {
            tracing::debug!(group, "share-partitions led elsewhere not started in time");
        }
    }
    Ok(())
}

/// How long a heartbeat waits for other leaders to start its
/// share-partitions.
const START_ELSEWHERE_FOR: std::time::Duration = std::time::Duration::from_secs(2);

/// Start each share-partition of `group` in `tps` that this broker leads
/// and that has none yet, where `share.auto.offset.reset` says; answered
/// once each start is durable (one that is not is logged, and starts again
/// at the first fetch).
pub(crate) async fn start_here(
    broker: &Broker,
    group: &str,
    tps: Vec<TopicIdPartition>,
) -> Result<(), HandlerError> {
    let group: Arc<str> = Arc::from(group);
    let mut new = Vec::new();
    for tp in tps {
        let key = super::share_fetch::share_key(&group, tp);
        if broker.shares().get(&key).is_some() {
            continue;
        }
        if let Ok(partition) = super::share_fetch::leader_partition(broker, tp) {
            new.push((key, partition));
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
