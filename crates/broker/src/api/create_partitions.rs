//! CreatePartitions (API key 37): raise a topic's partition count to a new
//! total, optionally with a replica assignment for the new partitions (which
//! on one broker must name this node); `validate_only` checks without adding.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse};

use weir_auth::AclOperation;

use crate::acls::topic_denied;
use crate::admin;
use crate::error::ApiError;
use crate::quotas;
use crate::{Broker, HandlerError, RequestContext};

pub(crate) async fn handle(
    broker: &Broker,
    ctx: &RequestContext,
    req: CreatePartitionsRequest,
) -> Result<CreatePartitionsResponse, HandlerError> {
    let quota = broker.mutation_quota(ctx, MUTATION_QUOTA_STRICT_SINCE);
    let repeated = admin::duplicates(req.topics.iter().map(|t| t.name.0.to_string()));
    let mut answered = std::collections::BTreeSet::new();
    let mut results = Vec::with_capacity(req.topics.len());
    for topic in &req.topics {
        let name = topic.name.0.to_string();
        let outcome = if repeated.contains(&name) {
            if !answered.insert(name.clone()) {
                continue;
            }
            Err(admin::invalid_request(format!(
                "topic '{name}' appears more than once in the request"
            )))
        } else if !broker.allowed_on_topic(ctx, AclOperation::Alter, &name) {
            Err(topic_denied(ctx, AclOperation::Alter, &name))
        } else {
            quotas::within_mutation_quota(quota.as_ref(), req.validate_only, |validate_only| {
                add(broker, topic, validate_only).map(|added| ((), added))
            })
        };
        let (error_code, error_message) = admin::outcome(&outcome);
        results.push(
            CreatePartitionsTopicResult::default()
                .with_name(topic.name.clone())
                .with_error_code(error_code)
                .with_error_message(error_message),
        );
    }
    Ok(CreatePartitionsResponse::default()
        .with_results(results)
        .with_throttle_time_ms(quota.map_or(0, |q| q.throttle_time_ms())))
}

/// The first version a `controller_mutation_rate` in debt refuses with
/// THROTTLING_QUOTA_EXCEEDED (KIP-599); older ones are only throttled.
const MUTATION_QUOTA_STRICT_SINCE: i16 = 3;

/// Add the partitions; answers how many were (or would be) added.
fn add(
    broker: &Broker,
    topic: &CreatePartitionsTopic,
    validate_only: bool,
) -> Result<usize, ApiError> {
    let name = topic.name.0.as_str();
    let before = broker.topic(name).map_or(0, |t| t.meta.partitions);
    let mut chosen = None;
    if let Some(assignments) = &topic.assignments {
        let current = broker
            .topic(name)
            .ok_or_else(|| ApiError::unknown_topic(name))?
            .meta
            .partitions;
        let added = i64::from(topic.count) - i64::from(current);
        // A count that does not grow the topic is INVALID_PARTITIONS below,
        // whatever the assignments say.
        if added > 0 && assignments.len() as i64 != added {
            return Err(ApiError::new(
                ResponseError::InvalidReplicaAssignment,
                format!(
                    "{} assignments given for the {added} partitions being added",
                    assignments.len()
                ),
            ));
        }
        if added > 0 {
            let factor = broker
                .topic(name)
                .and_then(|t| t.meta.assignments.first().map(|a| a.replicas.len()))
                .unwrap_or(1);
            let sets = assignments
                .iter()
                .zip(current..)
                .map(|(a, partition)| {
                    admin::check_replicas(broker, partition, &a.broker_ids, factor)
                })
                .collect::<Result<Vec<_>, _>>()?;
            // A single node's sets are all this node: its store places them.
            chosen = Some(sets).filter(|_| broker.metadata().replicated());
        }
    }
    broker.create_partitions(name, topic.count, validate_only, chosen)?;
    Ok(usize::try_from(topic.count.saturating_sub(before)).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use kafka_protocol::messages::create_partitions_request::CreatePartitionsAssignment;
    use kafka_protocol::messages::{ApiKey, BrokerId, TopicName};

    use super::*;
    use crate::admin::str_bytes;
    use crate::admin::testing::{self, call};

    fn grow(name: &str, count: i32) -> CreatePartitionsTopic {
        CreatePartitionsTopic::default()
            .with_name(TopicName(str_bytes(name)))
            .with_count(count)
            .with_assignments(None)
    }

    fn request(topics: Vec<CreatePartitionsTopic>) -> CreatePartitionsRequest {
        CreatePartitionsRequest::default()
            .with_topics(topics)
            .with_timeout_ms(5_000)
    }

    #[tokio::test]
    async fn every_version_raises_the_partition_count_to_the_new_total() {
        let t = testing::broker();
        for version in testing::versions(ApiKey::CreatePartitions) {
            let name = format!("grow-v{version}");
            t.broker
                .create_topic(&name, 1, 1, BTreeMap::new(), false)
                .unwrap();
            let resp = call(&t.broker, version, request(vec![grow(&name, 3)])).await;
            assert_eq!(
                resp.results[0].error_code, 0,
                "v{version}: {:?}",
                resp.results[0].error_message
            );
            assert_eq!(t.broker.topic(&name).unwrap().meta.partitions, 3);
            assert_eq!(t.broker.metadata().topic(&name).unwrap().partitions, 3);
            assert!(t.broker.partition(&name, 2).is_ok());
        }
    }

    #[tokio::test]
    async fn shrinking_unknown_topics_and_foreign_assignments_are_refused() {
        let t = testing::broker();
        t.broker
            .create_topic("base", 2, 1, BTreeMap::new(), false)
            .unwrap();
        let on = |brokers: &[i32]| {
            CreatePartitionsAssignment::default()
                .with_broker_ids(brokers.iter().map(|&b| BrokerId(b)).collect())
        };
        let req = request(vec![
            grow("base", 2),
            grow("missing", 5),
            grow("base-copy", 1),
        ]);
        let resp = call(&t.broker, 3, req).await;
        let codes: Vec<i16> = resp.results.iter().map(|r| r.error_code).collect();
        assert_eq!(
            codes,
            [
                ResponseError::InvalidPartitions.code(),
                ResponseError::UnknownTopicOrPartition.code(),
                ResponseError::UnknownTopicOrPartition.code(),
            ]
        );
        let bad = ResponseError::InvalidReplicaAssignment.code();
        for assignments in [vec![on(&[1])], vec![on(&[0])], vec![on(&[0]), on(&[0, 1])]] {
            let resp = call(
                &t.broker,
                3,
                request(vec![grow("base", 4).with_assignments(Some(assignments))]),
            )
            .await;
            assert_eq!(resp.results[0].error_code, bad);
        }
        assert_eq!(t.broker.topic("base").unwrap().meta.partitions, 2);

        let resp = call(
            &t.broker,
            3,
            request(vec![
                grow("base", 4).with_assignments(Some(vec![on(&[0]), on(&[0])])),
            ]),
        )
        .await;
        assert_eq!(resp.results[0].error_code, 0);
        assert_eq!(t.broker.topic("base").unwrap().meta.partitions, 4);
    }

    #[tokio::test]
    async fn validate_only_adds_nothing_and_duplicates_are_invalid_request() {
        let t = testing::broker();
        t.broker
            .create_topic("steady", 1, 1, BTreeMap::new(), false)
            .unwrap();
        let resp = call(
            &t.broker,
            2,
            request(vec![grow("steady", 8)]).with_validate_only(true),
        )
        .await;
        assert_eq!(resp.results[0].error_code, 0);
        assert_eq!(t.broker.topic("steady").unwrap().meta.partitions, 1);

        let resp = call(
            &t.broker,
            2,
            request(vec![grow("steady", 2), grow("steady", 3)]),
        )
        .await;
        assert_eq!(resp.results.len(), 1);
        assert_eq!(
            resp.results[0].error_code,
            ResponseError::InvalidRequest.code()
        );
        assert_eq!(t.broker.topic("steady").unwrap().meta.partitions, 1);
    }
}
