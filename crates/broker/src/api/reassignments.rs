//! AlterPartitionReassignments (API key 45) and ListPartitionReassignments
//! (API key 46): move a partition's replicas to other brokers while it is
//! served (KIP-455), cancel such a move, and list those in progress. The
//! quorum adds the target's new replicas, which copy the leader as
//! followers; once all of them are in sync it drops the replicas the target
//! leaves out, in the same change. A single node has nowhere to move a
//! replica: only a target of itself is accepted.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::admin::str_bytes;
use crate::api::elect_leaders::{PARTITIONS_PER_REQUEST_MAX, code_of};
use crate::error::ApiError;
use crate::{Broker, HandlerError, RequestContext, blocking};
use kafka_protocol::ResponseError;
use kafka_protocol::messages::alter_partition_reassignments_response::{
    ReassignablePartitionResponse, ReassignableTopicResponse,
};
use kafka_protocol::messages::list_partition_reassignments_response::{
    OngoingPartitionReassignment, OngoingTopicReassignment,
};
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse, BrokerId,
    ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse, TopicName,
};

/// First version with `allow_replication_factor_change` (KIP-860).
const RF_CHANGE_VERSION: i16 = 1;

pub(crate) async fn alter(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    req: AlterPartitionReassignmentsRequest,
) -> Result<AlterPartitionReassignmentsResponse, HandlerError> {
    if !broker.allowed_on_cluster(ctx, weir_auth::AclOperation::Alter) {
        let denied = crate::acls::cluster_denied(ctx, weir_auth::AclOperation::Alter);
        return Ok(AlterPartitionReassignmentsResponse::default()
            .with_error_code(denied.code())
            .with_error_message(Some(crate::admin::str_bytes(denied.message))));
    }
    let allow_rf_change = ctx.version < RF_CHANGE_VERSION || req.allow_replication_factor_change;
    let mut seen = std::collections::BTreeSet::new();
    let mut changes = Vec::new();
    let mut refused = Vec::new();
    for topic in req.topics {
        let name = topic.name.0.to_string();
        for p in topic.partitions {
            if !seen.insert((name.clone(), p.partition_index)) {
                continue;
            }
            let target: Option<Vec<i32>> = p
                .replicas
                .map(|replicas| replicas.into_iter().map(|b| b.0).collect());
            if !allow_rf_change && let Some(target) = &target {
                let current = broker
                    .metadata()
                    .topic(&name)
                    .and_then(|t| t.assignment(p.partition_index, broker.config().node_id))
                    .map(|a| {
                        a.replicas
                            .iter()
                            .filter(|r| !a.adding_replicas.contains(r))
                            .count()
                    });
                if current.is_some_and(|n| n != target.len()) {
                    refused.push((
                        name.clone(),
                        p.partition_index,
                        ApiError::new(
                            ResponseError::InvalidReplicationFactor,
                            "the reassignment changes the replication factor, which the \
                             request does not allow",
                        ),
                    ));
                    continue;
                }
            }
            changes.push((name.clone(), p.partition_index, target));
        }
    }
    let response = AlterPartitionReassignmentsResponse::default()
        .with_allow_replication_factor_change(allow_rf_change);
    if changes.len() > PARTITIONS_PER_REQUEST_MAX {
        return Ok(response
            .with_error_code(ResponseError::InvalidRequest.code())
            .with_error_message(Some(str_bytes(format!(
                "more than {PARTITIONS_PER_REQUEST_MAX} partitions in one reassignment"
            )))));
    }
    let node = broker.config().node_id;
    let altered = if changes.is_empty() {
        Ok(Vec::new())
    } else {
        blocking::run({
            let broker = broker.clone();
            move || broker.metadata().alter_reassignments(changes, node)
        })
        .await?
    };
    let results = match altered {
        Ok(results) => results,
        Err(err) => {
            let err = ApiError::from(err);
            return Ok(response
                .with_error_code(err.code.code())
                .with_error_message(Some(str_bytes(err.message))));
        }
    };
    let mut topics: BTreeMap<String, Vec<ReassignablePartitionResponse>> = BTreeMap::new();
    for result in &results {
        let (code, message) = code_of(result);
        topics.entry(result.topic.clone()).or_default().push(
            ReassignablePartitionResponse::default()
                .with_partition_index(result.partition)
                .with_error_code(code)
                .with_error_message(message.map(str_bytes)),
        );
    }
    for (topic, partition, err) in refused {
        topics.entry(topic).or_default().push(
            ReassignablePartitionResponse::default()
                .with_partition_index(partition)
                .with_error_code(err.code.code())
                .with_error_message(Some(str_bytes(err.message))),
        );
    }
    Ok(response.with_error_code(0).with_responses(
        topics
            .into_iter()
            .map(|(name, partitions)| {
                ReassignableTopicResponse::default()
                    .with_name(TopicName(str_bytes(name)))
                    .with_partitions(partitions)
            })
            .collect(),
    ))
}

pub(crate) async fn list(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    req: ListPartitionReassignmentsRequest,
) -> Result<ListPartitionReassignmentsResponse, HandlerError> {
    if !broker.allowed_on_cluster(ctx, weir_auth::AclOperation::Describe) {
        let denied = crate::acls::cluster_denied(ctx, weir_auth::AclOperation::Describe);
        return Ok(ListPartitionReassignmentsResponse::default()
            .with_error_code(denied.code())
            .with_error_message(Some(crate::admin::str_bytes(denied.message))));
    }
    let wanted: Option<std::collections::BTreeSet<(String, i32)>> = req.topics.map(|topics| {
        topics
            .into_iter()
            .flat_map(|t| {
                let name = t.name.0.to_string();
                t.partition_indexes
                    .into_iter()
                    .map(move |p| (name.clone(), p))
            })
            .collect()
    });
    let mut topics: BTreeMap<String, Vec<OngoingPartitionReassignment>> = BTreeMap::new();
    for r in broker.metadata().reassignments() {
        if wanted
            .as_ref()
            .is_some_and(|w| !w.contains(&(r.topic.clone(), r.partition)))
        {
            continue;
        }
        let ids = |v: &[i32]| v.iter().copied().map(BrokerId).collect::<Vec<_>>();
        topics.entry(r.topic.clone()).or_default().push(
            OngoingPartitionReassignment::default()
                .with_partition_index(r.partition)
                .with_replicas(ids(&r.replicas))
                .with_adding_replicas(ids(&r.adding_replicas))
                .with_removing_replicas(ids(&r.removing_replicas)),
        );
    }
    Ok(ListPartitionReassignmentsResponse::default()
        .with_error_code(0)
        .with_topics(
            topics
                .into_iter()
                .map(|(name, partitions)| {
                    OngoingTopicReassignment::default()
                        .with_name(TopicName(str_bytes(name)))
                        .with_partitions(partitions)
                })
                .collect(),
        ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_metadata::{PartitionError, PartitionResult};

    #[test]
    fn a_cancel_maps_to_kafkas_no_reassignment_in_progress() {
        let result = PartitionResult {
            topic: "t".into(),
            partition: 0,
            error: Some(PartitionError::NoReassignmentInProgress),
        };
        assert_eq!(
            code_of(&result).0,
            ResponseError::NoReassignmentInProgress.code()
        );
    }
}
