//! ElectLeaders (API key 43): a preferred-replica or an unclean leader
//! election for the partitions named (or, with none named, every partition
//! that needs one), committed through the metadata quorum. Each partition
//! gets Kafka's answer: NONE, ELECTION_NOT_NEEDED,
//! PREFERRED_LEADER_NOT_AVAILABLE, ELIGIBLE_LEADERS_NOT_AVAILABLE or
//! UNKNOWN_TOPIC_OR_PARTITION. A single node's only replica always leads.

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::elect_leaders_response::{
    PartitionResult as WirePartitionResult, ReplicaElectionResult,
};
use kafka_protocol::messages::{ElectLeadersRequest, ElectLeadersResponse, TopicName};
use weir_metadata::{ElectionKind, PartitionResult};

use crate::admin::str_bytes;
use crate::error::ApiError;
use crate::{Broker, HandlerError, RequestContext, blocking};

/// Most partitions one request may name: bounds the quorum entry it becomes.
pub(crate) const PARTITIONS_PER_REQUEST_MAX: usize = 10_000;

pub(crate) async fn handle(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    req: ElectLeadersRequest,
) -> Result<ElectLeadersResponse, HandlerError> {
    let refuse = |error: ApiError| {
        ElectLeadersResponse::default()
            .with_error_code(error.code.code())
            .with_replica_election_results(Vec::new())
    };
    if !broker.allowed_on_cluster(ctx, weir_auth::AclOperation::Alter) {
        return Ok(refuse(crate::acls::cluster_denied(
            ctx,
            weir_auth::AclOperation::Alter,
        )));
    }
    let kind = match req.election_type {
        0 => ElectionKind::Preferred,
        1 => ElectionKind::Unclean,
        other => {
            return Ok(refuse(ApiError::new(
                ResponseError::InvalidRequest,
                format!("unknown election type {other}"),
            )));
        }
    };
    let partitions: Option<Vec<(String, i32)>> = req.topic_partitions.map(|topics| {
        let mut seen = std::collections::BTreeSet::new();
        topics
            .into_iter()
            .flat_map(|t| {
                let name = t.topic.0.to_string();
                t.partitions.into_iter().map(move |p| (name.clone(), p))
            })
            .filter(|key| seen.insert(key.clone()))
            .collect()
    });
    if partitions
        .as_ref()
        .is_some_and(|p| p.len() > PARTITIONS_PER_REQUEST_MAX)
    {
        return Ok(refuse(ApiError::new(
            ResponseError::InvalidRequest,
            format!("more than {PARTITIONS_PER_REQUEST_MAX} partitions in one election"),
        )));
    }
    let elected = blocking::run({
        let broker = broker.clone();
        move || broker.metadata().elect_leaders(partitions, kind)
    })
    .await?;
    let results = match elected {
        Ok(results) => results,
        Err(err) => return Ok(refuse(ApiError::from(err))),
    };
    Ok(ElectLeadersResponse::default()
        .with_error_code(0)
        .with_replica_election_results(by_topic(results)))
}

/// Kafka's error code and message for one partition's result.
pub(crate) fn code_of(result: &PartitionResult) -> (i16, Option<String>) {
    use weir_metadata::PartitionError as E;
    let Some(error) = &result.error else {
        return (0, None);
    };
    let (code, message) = match error {
        E::ElectionNotNeeded => (ResponseError::ElectionNotNeeded, None),
        E::PreferredLeaderNotAvailable => (ResponseError::PreferredLeaderNotAvailable, None),
        E::EligibleLeadersNotAvailable => (ResponseError::EligibleLeadersNotAvailable, None),
        E::UnknownTopicOrPartition => (ResponseError::UnknownTopicOrPartition, None),
        E::InvalidReplicaAssignment(why) => {
            (ResponseError::InvalidReplicaAssignment, Some(why.clone()))
        }
        E::NoReassignmentInProgress => (ResponseError::NoReassignmentInProgress, None),
    };
    (code.code(), message)
}

fn by_topic(results: Vec<PartitionResult>) -> Vec<ReplicaElectionResult> {
    let mut topics: BTreeMap<String, Vec<WirePartitionResult>> = BTreeMap::new();
    for result in results {
        let (code, message) = code_of(&result);
        topics.entry(result.topic).or_default().push(
            WirePartitionResult::default()
                .with_partition_id(result.partition)
                .with_error_code(code)
                .with_error_message(message.map(str_bytes)),
        );
    }
    topics
        .into_iter()
        .map(|(topic, partitions)| {
            ReplicaElectionResult::default()
                .with_topic(TopicName(str_bytes(topic)))
                .with_partition_result(partitions)
        })
        .collect()
}
