//! ReadShareGroupState and WriteShareGroupState (KIP-932's inter-broker
//! APIs, 84 and 85), served by a cluster's share coordinator
//! (`crate::share::coordinator`) to the share-partition leaders
//! (`crate::share::remote`). A share-partition whose `__share_group_state`
//! partition this broker does not lead is answered NOT_COORDINATOR, and
//! the sender looks its coordinator up again. A write is answered once the
//! ISR holds it.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::{
    ReadShareGroupStateRequest, ReadShareGroupStateResponse, WriteShareGroupStateRequest,
    WriteShareGroupStateResponse, read_share_group_state_response as read_response,
    write_share_group_state_response as write_response,
};
use kafka_protocol::protocol::StrBytes;

use crate::error::ApiError;
use crate::share::remote::{written_key, written_value};
use crate::share::state::{self, wire_batches};
use crate::{Broker, HandlerError, RequestContext};

fn text(s: &str) -> Option<StrBytes> {
    Some(StrBytes::from_string(s.to_string()))
}

/// The `__share_group_state` partition of `key` as this broker's metadata
/// has the topic now.
fn index_of(broker: &Broker, key: &crate::share::SharePartitionKey) -> Result<i32, ApiError> {
    let topic = broker.metadata().topic(state::STATE_TOPIC).ok_or_else(|| {
        ApiError::new(
            ResponseError::NotCoordinator,
            format!("{} does not exist yet", state::STATE_TOPIC),
        )
    })?;
    Ok(state::state_partition(key, topic.partitions))
}

/// Only share-partition leaders send these: the cluster acting.
fn cluster_action(broker: &Broker, ctx: &RequestContext) -> Result<(), ApiError> {
    match broker.allowed_on_cluster(ctx, weir_auth::AclOperation::ClusterAction) {
        true => Ok(()),
        false => Err(crate::acls::cluster_denied(
            ctx,
            weir_auth::AclOperation::ClusterAction,
        )),
    }
}

pub(crate) async fn read(
    broker: &Broker,
    ctx: &RequestContext,
    req: ReadShareGroupStateRequest,
) -> Result<ReadShareGroupStateResponse, HandlerError> {
    let group = req.group_id.to_string();
    let allowed = cluster_action(broker, ctx);
    let coordinator = broker.shares().coordinator();
    // Each share-partition answered once: a snapshot is far larger than
    // the entry asking for it, so repeats would multiply the response.
    let topics = super::first_of_each(req.topics, |t| t.topic_id);
    let results = topics
        .into_iter()
        .map(|t| {
            let partitions = super::first_of_each(t.partitions, |p| p.partition)
                .into_iter()
                .map(|p| {
                    let key = written_key(&group, t.topic_id, p.partition);
                    let read = allowed
                        .clone()
                        .and_then(|()| index_of(broker, &key))
                        .and_then(|index| coordinator.read(index, &key, p.leader_epoch));
                    let answer = read_response::PartitionResult::default()
                        .with_partition(p.partition)
                        .with_state_epoch(0);
                    match read {
                        // Kafka's answer for a share-partition with no state.
                        Ok(None) => answer.with_start_offset(-1),
                        Ok(Some(snapshot)) => answer
                            .with_start_offset(snapshot.start_offset)
                            .with_state_batches(wire_batches!(
                                read_response::StateBatch,
                                snapshot.batches
                            )),
                        Err(e) => answer
                            .with_start_offset(-1)
                            .with_error_code(e.code.code())
                            .with_error_message(text(&e.message)),
                    }
                })
                .collect();
            read_response::ReadStateResult::default()
                .with_topic_id(t.topic_id)
                .with_partitions(partitions)
        })
        .collect();
    Ok(ReadShareGroupStateResponse::default().with_results(results))
}

pub(crate) async fn write(
    broker: &Broker,
    ctx: &RequestContext,
    req: WriteShareGroupStateRequest,
) -> Result<WriteShareGroupStateResponse, HandlerError> {
    let group = req.group_id.to_string();
    let allowed = cluster_action(broker, ctx);
    let now_ms = broker.shares().now_ms();
    let mut items = Vec::new();
    for t in &req.topics {
        for p in &t.partitions {
            let key = written_key(&group, t.topic_id, p.partition);
            let value = written_value(p);
            items.push((t.topic_id, key, value, p.leader_epoch));
        }
    }
    let b = broker.shares().clone();
    let indexes: Vec<Result<i32, ApiError>> = items
        .iter()
        .map(|(_, key, _, _)| allowed.clone().and_then(|()| index_of(broker, key)))
        .collect();
    let appended = crate::blocking::run(move || {
        items
            .into_iter()
            .zip(indexes)
            .map(|((topic_id, key, value, epoch), index)| {
                let written = value
                    .and_then(|value| b.coordinator().write(index?, &key, value, epoch, now_ms));
                (topic_id, key.partition, written)
            })
            .collect::<Vec<_>>()
    })
    .await?;
    let mut results: Vec<write_response::WriteStateResult> = Vec::new();
    for (topic_id, partition, written) in appended {
        let outcome = match written {
            Ok(committed) => committed.wait().await.map_err(|e| {
                ApiError::new(
                    ResponseError::NotCoordinator,
                    format!("share state was not replicated: {e}"),
                )
            }),
            Err(e) => Err(e),
        };
        let mut answer = write_response::PartitionResult::default().with_partition(partition);
        if let Err(e) = outcome {
            answer = answer
                .with_error_code(e.code.code())
                .with_error_message(text(&e.message));
        }
        match results.iter_mut().find(|r| r.topic_id == topic_id) {
            Some(r) => r.partitions.push(answer),
            None => results.push(
                write_response::WriteStateResult::default()
                    .with_topic_id(topic_id)
                    .with_partitions(vec![answer]),
            ),
        }
    }
    Ok(WriteShareGroupStateResponse::default().with_results(results))
}
