//! CreateTopics (API key 19): create topics from a partition count and
//! replication factor (-1 takes the broker's defaults) or from a manual
//! replica assignment, with configs; `validate_only` checks without creating.
//! Every topic gets its own result, so one bad topic fails only itself.

use std::collections::BTreeMap;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::create_topics_request::{CreatableReplicaAssignment, CreatableTopic};
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse, TopicName};
use weir_metadata::TopicMeta;

use weir_auth::{AclOperation, ResourceType};

use crate::acls::topic_denied;
use crate::admin::{self, str_bytes};
use crate::error::ApiError;
use crate::quotas;
use crate::topics::TOPIC_PARTITIONS_MAX;
use crate::{Broker, HandlerError, RequestContext};

pub(crate) async fn handle(
    broker: &Broker,
    ctx: &RequestContext,
    req: CreateTopicsRequest,
) -> Result<CreateTopicsResponse, HandlerError> {
    // CREATE on the cluster creates any topic; without it, CREATE on each.
    let cluster_create = broker.allowed_quietly(
        ctx,
        AclOperation::Create,
        ResourceType::Cluster,
        weir_auth::CLUSTER_RESOURCE_NAME,
    );
    // Creation is synchronous, so there is nothing for `timeout_ms` to bound.
    let quota = broker.mutation_quota(ctx, MUTATION_QUOTA_STRICT_SINCE);
    let repeated = admin::duplicates(req.topics.iter().map(|t| t.name.0.to_string()));
    let mut answered = std::collections::BTreeSet::new();
    let mut results = Vec::with_capacity(req.topics.len());
    for topic in &req.topics {
        let name = topic.name.0.to_string();
        let outcome = if repeated.contains(&name) {
            // Kafka answers a repeated name once, with INVALID_REQUEST.
            if !answered.insert(name.clone()) {
                continue;
            }
            Err(admin::invalid_request(format!(
                "topic '{name}' appears more than once in the request"
            )))
        } else if !cluster_create && !broker.allowed_on_topic(ctx, AclOperation::Create, &name) {
            Err(topic_denied(ctx, AclOperation::Create, &name))
        } else {
            quotas::within_mutation_quota(quota.as_ref(), req.validate_only, |validate_only| {
                let meta = create(broker, topic, validate_only)?;
                let partitions = usize::try_from(meta.partitions).unwrap_or(0);
                Ok((meta, partitions))
            })
        };
        // The configs are told only to a client that may describe them.
        let configs_visible =
            outcome.is_ok() && broker.allowed_on_topic(ctx, AclOperation::DescribeConfigs, &name);
        results.push(result(broker, &topic.name, outcome, configs_visible));
    }
    Ok(CreateTopicsResponse::default()
        .with_topics(results)
        .with_throttle_time_ms(quota.map_or(0, |q| q.throttle_time_ms())))
}

/// The first version whose topics a `controller_mutation_rate` in debt
/// refuses with THROTTLING_QUOTA_EXCEEDED (KIP-599); older ones are only
/// throttled.
const MUTATION_QUOTA_STRICT_SINCE: i16 = 6;

fn create(
    broker: &Broker,
    topic: &CreatableTopic,
    validate_only: bool,
) -> Result<TopicMeta, ApiError> {
    let (partitions, replication_factor, assignments) = if topic.assignments.is_empty() {
        (topic.num_partitions, topic.replication_factor, None)
    } else {
        if topic.num_partitions != -1 || topic.replication_factor != -1 {
            return Err(admin::invalid_request(
                "num_partitions and replication_factor must be -1 when assignments are given",
            ));
        }
        let replicas = check_assignments(broker, &topic.assignments)?;
        // check_assignments bounds the count by TOPIC_PARTITIONS_MAX and
        // makes every set as long as the first, at most one per broker.
        let factor = replicas
            .first()
            .map_or(Ok(1), |set| i16::try_from(set.len()))
            .map_err(|_| admin::invalid_request("more replicas than brokers"))?;
        (replicas.len() as i32, factor, Some(replicas))
    };
    let mut configs = BTreeMap::new();
    for config in &topic.configs {
        let value = config.value.as_ref().ok_or_else(|| {
            ApiError::new(
                ResponseError::InvalidConfig,
                format!("config '{}' has no value", config.name.as_str()),
            )
        })?;
        configs.insert(config.name.to_string(), value.to_string());
    }
    // A single node's sets are all this node: its store places them itself.
    let assignments = assignments.filter(|_| broker.metadata().replicated());
    broker.create_topic_assigned(
        topic.name.0.as_str(),
        partitions,
        replication_factor,
        configs,
        validate_only,
        assignments,
    )
}

/// Partitions must be numbered 0..n; on a single node each on exactly this
/// broker, on a cluster each with as many replicas as the first and no
/// broker twice (the quorum checks that every broker is registered).
/// Returns the replica sets in partition order.
fn check_assignments(
    broker: &Broker,
    assignments: &[CreatableReplicaAssignment],
) -> Result<Vec<Vec<i32>>, ApiError> {
    let invalid = |why: String| ApiError::new(ResponseError::InvalidReplicaAssignment, why);
    if assignments.len() > TOPIC_PARTITIONS_MAX as usize {
        return Err(ApiError::new(
            ResponseError::InvalidPartitions,
            format!(
                "{} partitions assigned; at most {TOPIC_PARTITIONS_MAX} are allowed",
                assignments.len()
            ),
        ));
    }
    let mut indexes: Vec<i32> = assignments.iter().map(|a| a.partition_index).collect();
    indexes.sort_unstable();
    if indexes
        .iter()
        .zip(0..)
        .any(|(&index, expected)| index != expected)
    {
        return Err(invalid(format!(
            "partition indexes {indexes:?} are not the consecutive sequence 0..{}",
            assignments.len()
        )));
    }
    let mut sorted: Vec<&CreatableReplicaAssignment> = assignments.iter().collect();
    sorted.sort_unstable_by_key(|a| a.partition_index);
    sorted
        .into_iter()
        .map(|a| {
            admin::check_replicas(
                broker,
                a.partition_index,
                &a.broker_ids,
                assignments[0].broker_ids.len(),
            )
        })
        .collect()
}

fn result(
    broker: &Broker,
    name: &TopicName,
    outcome: Result<TopicMeta, ApiError>,
    configs_visible: bool,
) -> CreatableTopicResult {
    let (error_code, error_message) = admin::outcome(&outcome);
    let base = CreatableTopicResult::default()
        .with_name(name.clone())
        .with_error_code(error_code)
        .with_error_message(error_message);
    let Ok(meta) = outcome else {
        return base.with_num_partitions(-1).with_replication_factor(-1);
    };
    if !configs_visible {
        return base
            .with_topic_id(meta.id)
            .with_num_partitions(meta.partitions)
            .with_replication_factor(meta.replication_factor)
            .with_topic_config_error_code(ResponseError::TopicAuthorizationFailed.code());
    }
    let configs = admin::config_chains(broker, Some(&meta.configs))
        .into_iter()
        .filter_map(|(def, chain)| {
            let effective = chain.into_iter().next()?;
            Some(
                CreatableTopicConfigs::default()
                    .with_name(str_bytes(def.name))
                    .with_value(Some(str_bytes(effective.value)))
                    .with_read_only(false)
                    .with_config_source(effective.source.kafka_id())
                    .with_is_sensitive(false),
            )
        })
        .collect();
    base.with_topic_id(meta.id)
        .with_num_partitions(meta.partitions)
        .with_replication_factor(meta.replication_factor)
        .with_configs(Some(configs))
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::create_topics_request::CreatableTopicConfig;
    use kafka_protocol::messages::{ApiKey, BrokerId};
    use kafka_protocol::protocol::StrBytes;

    use super::*;
    use crate::admin::testing::{self, call};

    fn topic(name: &str, partitions: i32) -> CreatableTopic {
        CreatableTopic::default()
            .with_name(TopicName(StrBytes::from_string(name.into())))
            .with_num_partitions(partitions)
            .with_replication_factor(-1)
    }

    fn request(topics: Vec<CreatableTopic>) -> CreateTopicsRequest {
        CreateTopicsRequest::default()
            .with_topics(topics)
            .with_timeout_ms(5_000)
    }

    fn config(name: &str, value: &str) -> CreatableTopicConfig {
        CreatableTopicConfig::default()
            .with_name(StrBytes::from_string(name.into()))
            .with_value(Some(StrBytes::from_string(value.into())))
    }

    #[tokio::test]
    async fn every_version_creates_topics_with_defaults_and_configs() {
        let t = testing::broker();
        for version in testing::versions(ApiKey::CreateTopics) {
            let name = format!("orders-v{version}");
            let req = request(vec![
                topic(&name, -1).with_configs(vec![config("retention.ms", "1234")]),
            ]);
            let resp = call(&t.broker, version, req).await;
            let result = &resp.topics[0];
            assert_eq!(
                result.error_code, 0,
                "v{version}: {:?}",
                result.error_message
            );
            let meta = t.broker.topic(&name).expect("created").meta.clone();
            assert_eq!(meta.partitions, 4, "num.partitions default");
            assert_eq!(
                meta.configs.get("retention.ms").map(String::as_str),
                Some("1234")
            );
            if version >= 5 {
                assert_eq!(result.num_partitions, 4);
                assert_eq!(result.replication_factor, 1);
                let configs = result.configs.as_ref().expect("v5+ lists configs");
                let retention = configs
                    .iter()
                    .find(|c| c.name.as_str() == "retention.ms")
                    .expect("retention.ms listed");
                assert_eq!(retention.value.as_deref(), Some("1234"));
                assert_eq!(retention.config_source, 1, "set on the topic");
                let cleanup = configs
                    .iter()
                    .find(|c| c.name.as_str() == "cleanup.policy")
                    .expect("cleanup.policy listed");
                assert_eq!(cleanup.value.as_deref(), Some("delete"));
                assert_eq!(cleanup.config_source, 5, "Weir's default");
            }
            if version >= 7 {
                assert_eq!(result.topic_id, meta.id);
            }
        }
    }

    #[tokio::test]
    async fn duplicate_names_in_one_request_are_invalid_request_and_not_created() {
        let t = testing::broker();
        let req = request(vec![topic("dup", 1), topic("solo", 1), topic("dup", 2)]);
        let resp = call(&t.broker, 7, req).await;
        let codes: Vec<(String, i16)> = resp
            .topics
            .iter()
            .map(|r| (r.name.0.to_string(), r.error_code))
            .collect();
        assert_eq!(
            codes,
            [
                ("dup".to_string(), ResponseError::InvalidRequest.code()),
                ("solo".to_string(), 0)
            ]
        );
        assert!(t.broker.topic("dup").is_none());
    }

    #[tokio::test]
    async fn existing_topic_bad_name_bad_config_and_bad_replication_are_refused() {
        let t = testing::broker();
        call(&t.broker, 7, request(vec![topic("taken", 1)])).await;
        let req = request(vec![
            topic("taken", 1),
            topic("bad name", 1),
            topic("bad-config", 1).with_configs(vec![config("retention.ms", "soon")]),
            topic("unknown-config", 1).with_configs(vec![config("no.such", "1")]),
            topic("three-replicas", 1).with_replication_factor(3),
            topic("zero-partitions", 0),
        ]);
        let resp = call(&t.broker, 7, req).await;
        let codes: Vec<i16> = resp.topics.iter().map(|r| r.error_code).collect();
        assert_eq!(
            codes,
            [
                ResponseError::TopicAlreadyExists.code(),
                ResponseError::InvalidTopicException.code(),
                ResponseError::InvalidConfig.code(),
                ResponseError::InvalidConfig.code(),
                ResponseError::InvalidReplicationFactor.code(),
                ResponseError::InvalidPartitions.code(),
            ]
        );
        assert!(resp.topics.iter().all(|r| r.error_message.is_some()));
        // `__consumer_offsets` exists from start-up; only "taken" was created here.
        let user: Vec<_> = t
            .broker
            .topic_list()
            .into_iter()
            .filter(|s| !s.meta.name.starts_with("__"))
            .collect();
        assert_eq!(user.len(), 1);
    }

    #[tokio::test]
    async fn manual_assignment_must_name_this_broker_for_every_partition() {
        let t = testing::broker();
        let assign = |index: i32, brokers: &[i32]| {
            CreatableReplicaAssignment::default()
                .with_partition_index(index)
                .with_broker_ids(brokers.iter().map(|&b| BrokerId(b)).collect())
        };
        let manual = |name: &str, assignments| {
            topic(name, -1)
                .with_replication_factor(-1)
                .with_assignments(assignments)
        };
        let req = request(vec![
            manual("good", vec![assign(1, &[0]), assign(0, &[0])]),
            manual("other-broker", vec![assign(0, &[1])]),
            manual("two-replicas", vec![assign(0, &[0, 0])]),
            manual("gap", vec![assign(0, &[0]), assign(2, &[0])]),
            manual("both", vec![assign(0, &[0])]).with_num_partitions(1),
        ]);
        let resp = call(&t.broker, 7, req).await;
        let codes: Vec<i16> = resp.topics.iter().map(|r| r.error_code).collect();
        let bad = ResponseError::InvalidReplicaAssignment.code();
        assert_eq!(
            codes,
            [0, bad, bad, bad, ResponseError::InvalidRequest.code()]
        );
        assert_eq!(t.broker.topic("good").expect("created").meta.partitions, 2);
    }

    #[tokio::test]
    async fn created_topics_survive_a_restart_with_their_id_and_configs() {
        let testing::TestBroker { broker, dir } = testing::broker();
        let req = request(vec![
            topic("kept", 2).with_configs(vec![config("cleanup.policy", "compact")]),
        ]);
        let resp = call(&broker, 7, req).await;
        let id = resp.topics[0].topic_id;
        broker.log().shutdown().unwrap();
        drop(broker);

        let broker = testing::open(dir.path(), crate::BrokerConfig::default());
        let meta = &broker.topic("kept").expect("reloaded").meta;
        assert_eq!(meta.id, id);
        assert_eq!(meta.partitions, 2);
        assert_eq!(
            meta.configs.get("cleanup.policy").map(String::as_str),
            Some("compact")
        );
        assert!(broker.partition("kept", 1).is_ok());
    }

    #[tokio::test]
    async fn validate_only_checks_but_creates_nothing() {
        let t = testing::broker();
        let req = request(vec![
            topic("dry", 3),
            topic("dry-bad", 3).with_replication_factor(2),
        ])
        .with_validate_only(true);
        let resp = call(&t.broker, 7, req).await;
        assert_eq!(resp.topics[0].error_code, 0);
        assert_eq!(resp.topics[0].num_partitions, 3);
        assert_eq!(
            resp.topics[1].error_code,
            ResponseError::InvalidReplicationFactor.code()
        );
        assert!(t.broker.topic("dry").is_none() && t.broker.topic("dry-bad").is_none());
    }
}
