//! AlterConfigs (API key 33), the older whole-set config API that
//! librdkafka's `alter_configs` uses: the configs given for a topic or for
//! the broker replace all of its dynamic configs, so a key left out goes back
//! to its default. `validate_only` checks without changing anything.

use std::collections::BTreeMap;

use kafka_protocol::messages::alter_configs_request::AlterConfigsResource;
use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{AlterConfigsRequest, AlterConfigsResponse};
use weir_metadata::ConfigChange;

use weir_auth::AclOperation;

use crate::admin::{self, RESOURCE_BROKER, RESOURCE_TOPIC};
use crate::error::ApiError;
use crate::topics::validate_topic_name;
use crate::{Broker, HandlerError, RequestContext};

pub(crate) async fn handle(
    broker: &Broker,
    ctx: &RequestContext,
    req: AlterConfigsRequest,
) -> Result<AlterConfigsResponse, HandlerError> {
    let outcomes = admin::each_resource(
        &req.resources,
        |r| (r.resource_type, r.resource_name.to_string()),
        |resource| {
            let name = (resource.resource_type, resource.resource_name.as_str());
            match crate::acls::config_denial(broker, ctx, AclOperation::AlterConfigs, name) {
                Some(denied) => Err(denied),
                None => replace(broker, resource, req.validate_only),
            }
        },
    );
    let responses = outcomes
        .into_iter()
        .map(|(resource, outcome)| {
            let (error_code, error_message) = admin::outcome(&outcome);
            AlterConfigsResourceResponse::default()
                .with_error_code(error_code)
                .with_error_message(error_message)
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name.clone())
        })
        .collect();
    Ok(AlterConfigsResponse::default().with_responses(responses))
}

fn replace(
    broker: &Broker,
    resource: &AlterConfigsResource,
    validate_only: bool,
) -> Result<(), ApiError> {
    let mut wanted = BTreeMap::new();
    for config in &resource.configs {
        let key = config.name.to_string();
        let value = config
            .value
            .as_ref()
            .ok_or_else(|| admin::invalid_request(format!("config '{key}' has no value")))?;
        if wanted.insert(key.clone(), value.to_string()).is_some() {
            return Err(admin::invalid_request(format!(
                "config '{key}' appears more than once for one resource"
            )));
        }
    }
    let name = resource.resource_name.as_str();
    match resource.resource_type {
        RESOURCE_TOPIC => {
            validate_topic_name(name)?;
            let state = broker
                .topic(name)
                .ok_or_else(|| ApiError::unknown_topic(name))?;
            let changes = replacement(&state.meta.configs, wanted);
            broker.alter_topic_configs(name, &changes, validate_only)?;
            Ok(())
        }
        RESOURCE_BROKER => {
            admin::check_broker_resource(broker, name)?;
            let current = broker.metadata().broker_configs();
            admin::alter_broker_configs(broker, &replacement(&current, wanted), validate_only)
        }
        other => Err(admin::invalid_request(format!(
            "config resource type {other} cannot be altered; \
             TOPIC ({RESOURCE_TOPIC}) and BROKER ({RESOURCE_BROKER}) can"
        ))),
    }
}

/// The changes that turn `current` into exactly `wanted`.
fn replacement(
    current: &BTreeMap<String, String>,
    wanted: BTreeMap<String, String>,
) -> Vec<ConfigChange> {
    let mut changes: Vec<ConfigChange> = current
        .keys()
        .filter(|key| !wanted.contains_key(*key))
        .map(|key| ConfigChange::Delete(key.clone()))
        .collect();
    changes.extend(
        wanted
            .into_iter()
            .map(|(key, value)| ConfigChange::Set(key, value)),
    );
    changes
}

#[cfg(test)]
mod tests {
    use kafka_protocol::ResponseError;
    use kafka_protocol::messages::ApiKey;
    use kafka_protocol::messages::alter_configs_request::AlterableConfig;

    use super::*;
    use crate::admin::str_bytes;
    use crate::admin::testing::{self, call};

    fn config(name: &str, value: Option<&str>) -> AlterableConfig {
        AlterableConfig::default()
            .with_name(str_bytes(name))
            .with_value(value.map(str_bytes))
    }

    fn resource(kind: i8, name: &str, configs: Vec<AlterableConfig>) -> AlterConfigsResource {
        AlterConfigsResource::default()
            .with_resource_type(kind)
            .with_resource_name(str_bytes(name))
            .with_configs(configs)
    }

    #[tokio::test]
    async fn every_version_replaces_the_whole_set_of_topic_configs() {
        let t = testing::broker();
        for version in testing::versions(ApiKey::AlterConfigs) {
            let name = format!("replaced-v{version}");
            let initial = BTreeMap::from([
                ("retention.ms".to_string(), "1".to_string()),
                ("retention.bytes".to_string(), "2".to_string()),
            ]);
            t.broker.create_topic(&name, 1, 1, initial, false).unwrap();
            let req = AlterConfigsRequest::default().with_resources(vec![resource(
                RESOURCE_TOPIC,
                &name,
                vec![
                    config("retention.ms", Some("3")),
                    config("cleanup.policy", Some("compact")),
                ],
            )]);
            let resp = call(&t.broker, version, req).await;
            assert_eq!(
                resp.responses[0].error_code, 0,
                "v{version}: {:?}",
                resp.responses[0].error_message
            );
            let expected = BTreeMap::from([
                ("cleanup.policy".to_string(), "compact".to_string()),
                ("retention.ms".to_string(), "3".to_string()),
            ]);
            assert_eq!(t.broker.topic(&name).unwrap().meta.configs, expected);
            assert_eq!(t.broker.metadata().topic(&name).unwrap().configs, expected);
        }
    }

    #[tokio::test]
    async fn invalid_sets_are_refused_whole_and_validate_only_changes_nothing() {
        let t = testing::broker();
        let initial = BTreeMap::from([("retention.ms".to_string(), "1".to_string())]);
        t.broker
            .create_topic("kept", 1, 1, initial.clone(), false)
            .unwrap();
        let req = AlterConfigsRequest::default().with_resources(vec![
            resource(
                RESOURCE_TOPIC,
                "kept",
                vec![
                    config("retention.ms", Some("2")),
                    config("no.such", Some("1")),
                ],
            ),
            resource(RESOURCE_TOPIC, "missing", vec![]),
            resource(8, "0", vec![]),
        ]);
        let resp = call(&t.broker, 2, req).await;
        let codes: Vec<i16> = resp.responses.iter().map(|r| r.error_code).collect();
        assert_eq!(
            codes,
            [
                ResponseError::InvalidConfig.code(),
                ResponseError::UnknownTopicOrPartition.code(),
                ResponseError::InvalidRequest.code(),
            ]
        );
        let dry = AlterConfigsRequest::default()
            .with_validate_only(true)
            .with_resources(vec![resource(RESOURCE_TOPIC, "kept", vec![])]);
        assert_eq!(call(&t.broker, 2, dry).await.responses[0].error_code, 0);
        assert_eq!(t.broker.topic("kept").unwrap().meta.configs, initial);
    }

    #[tokio::test]
    async fn broker_configs_are_replaced_as_a_set() {
        let t = testing::broker();
        let set = |configs| {
            AlterConfigsRequest::default().with_resources(vec![resource(
                RESOURCE_BROKER,
                "0",
                configs,
            )])
        };
        let resp = call(
            &t.broker,
            1,
            set(vec![
                config("log.retention.ms", Some("1000")),
                config("log.retention.bytes", Some("10")),
            ]),
        )
        .await;
        assert_eq!(resp.responses[0].error_code, 0);
        let resp = call(
            &t.broker,
            1,
            set(vec![config("log.retention.bytes", Some("20"))]),
        )
        .await;
        assert_eq!(resp.responses[0].error_code, 0);
        let stored = t.broker.metadata().broker_configs();
        assert_eq!(
            stored,
            BTreeMap::from([("log.retention.bytes".to_string(), "20".to_string())])
        );
    }
}
