//! IncrementalAlterConfigs (API key 44): change single configs of a topic,
//! of the broker, or of a group (`crate::group_config`) with SET, DELETE (back to the default), APPEND and
//! SUBTRACT (list configs only, such as cleanup.policy); `validate_only`
//! checks without changing anything. Broker-level keys are the broker
//! synonyms of topic configs (`log.retention.ms`, ...), and a change to
//! them reaches every partition that does not override it.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse};
use weir_metadata::ConfigChange;

use weir_auth::AclOperation;

use crate::admin::{self, RESOURCE_BROKER, RESOURCE_TOPIC};
use crate::error::ApiError;
use crate::group_config::{self, RESOURCE_GROUP};
use crate::topic_config::{self, ConfigDef, ConfigKind, list_items};
use crate::topics::validate_topic_name;
use crate::{Broker, HandlerError, RequestContext};

/// Kafka's config operation numbers.
const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;
const OP_APPEND: i8 = 2;
const OP_SUBTRACT: i8 = 3;

pub(crate) async fn handle(
    broker: &Broker,
    ctx: &RequestContext,
    req: IncrementalAlterConfigsRequest,
) -> Result<IncrementalAlterConfigsResponse, HandlerError> {
    let outcomes = admin::each_resource(
        &req.resources,
        |r| (r.resource_type, r.resource_name.to_string()),
        |resource| {
            let name = (resource.resource_type, resource.resource_name.as_str());
            match crate::acls::config_denial(broker, ctx, AclOperation::AlterConfigs, name) {
                Some(denied) => Err(denied),
                None => alter(broker, resource, req.validate_only),
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
    Ok(IncrementalAlterConfigsResponse::default().with_responses(responses))
}

fn alter(
    broker: &Broker,
    resource: &AlterConfigsResource,
    validate_only: bool,
) -> Result<(), ApiError> {
    let repeated = admin::duplicates(resource.configs.iter().map(|c| c.name.as_str()));
    if let Some(key) = repeated.first() {
        return Err(admin::invalid_request(format!(
            "config '{key}' appears more than once for one resource"
        )));
    }
    let name = resource.resource_name.as_str();
    match resource.resource_type {
        RESOURCE_TOPIC => {
            validate_topic_name(name)?;
            let state = broker
                .topic(name)
                .ok_or_else(|| ApiError::unknown_topic(name))?;
            let chains = admin::config_chains(broker, Some(&state.meta.configs));
            let changes = resource
                .configs
                .iter()
                .map(|config| {
                    let def = topic_config::definition(config.name.as_str());
                    change(config, def, &chains)
                })
                .collect::<Result<Vec<_>, _>>()?;
            broker.alter_topic_configs(name, &changes, validate_only)?;
            Ok(())
        }
        RESOURCE_BROKER => {
            admin::check_broker_resource(broker, name)?;
            let chains = admin::config_chains(broker, None);
            let changes = resource
                .configs
                .iter()
                .map(|config| {
                    let def = topic_config::definition_by_broker_name(config.name.as_str());
                    change(config, def, &chains)
                })
                .collect::<Result<Vec<_>, _>>()?;
            admin::alter_broker_configs(broker, &changes, validate_only)
        }
        RESOURCE_GROUP => {
            // No group config is a list: APPEND and SUBTRACT are INVALID_CONFIG.
            let changes = resource
                .configs
                .iter()
                .map(|config| change(config, None, &[]))
                .collect::<Result<Vec<_>, _>>()?;
            group_config::alter(broker, name, &changes, validate_only)
        }
        other => Err(admin::invalid_request(format!(
            "config resource type {other} cannot be altered; TOPIC ({RESOURCE_TOPIC}), \
             BROKER ({RESOURCE_BROKER}) and GROUP ({RESOURCE_GROUP}) can"
        ))),
    }
}

/// Turn one operation into a change of the stored configs. APPEND and
/// SUBTRACT start from the effective value, so appending to a topic that
/// inherits `delete` yields `delete,compact`.
fn change(
    config: &AlterableConfig,
    def: Option<&'static ConfigDef>,
    chains: &[(&'static ConfigDef, Vec<topic_config::Synonym>)],
) -> Result<ConfigChange, ApiError> {
    let key = config.name.to_string();
    let value = || {
        config.value.as_ref().map(|v| v.to_string()).ok_or_else(|| {
            admin::invalid_request(format!("config '{key}' needs a value for this operation"))
        })
    };
    match config.config_operation {
        OP_SET => Ok(ConfigChange::Set(key.clone(), value()?)),
        OP_DELETE => Ok(ConfigChange::Delete(key)),
        op @ (OP_APPEND | OP_SUBTRACT) => {
            let def = def.filter(|d| {
                matches!(
                    d.kind,
                    ConfigKind::List { .. } | ConfigKind::ThrottledReplicas
                )
            });
            let Some(def) = def else {
                return Err(ApiError::new(
                    ResponseError::InvalidConfig,
                    format!("APPEND and SUBTRACT apply only to list configs; '{key}' is not one"),
                ));
            };
            let current = chains
                .iter()
                .find(|(d, _)| d.name == def.name)
                .and_then(|(_, chain)| chain.first())
                .map(|s| s.value.clone())
                .unwrap_or_else(|| def.default.to_string());
            let given = value()?;
            let given: Vec<&str> = list_items(&given).collect();
            let mut items: Vec<&str> = list_items(&current).collect();
            if op == OP_APPEND {
                for item in given {
                    if !items.contains(&item) {
                        items.push(item);
                    }
                }
            } else {
                items.retain(|item| !given.contains(item));
            }
            Ok(ConfigChange::Set(key.clone(), items.join(",")))
        }
        other => Err(admin::invalid_request(format!(
            "unknown config operation {other} for '{key}'"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use kafka_protocol::messages::ApiKey;

    use super::*;
    use crate::admin::str_bytes;
    use crate::admin::testing::{self, call};

    fn op(name: &str, operation: i8, value: Option<&str>) -> AlterableConfig {
        AlterableConfig::default()
            .with_name(str_bytes(name))
            .with_config_operation(operation)
            .with_value(value.map(str_bytes))
    }

    fn resource(kind: i8, name: &str, configs: Vec<AlterableConfig>) -> AlterConfigsResource {
        AlterConfigsResource::default()
            .with_resource_type(kind)
            .with_resource_name(str_bytes(name))
            .with_configs(configs)
    }

    fn request(resources: Vec<AlterConfigsResource>) -> IncrementalAlterConfigsRequest {
        IncrementalAlterConfigsRequest::default().with_resources(resources)
    }

    fn topic_config(t: &testing::TestBroker, topic: &str, key: &str) -> Option<String> {
        t.broker
            .topic(topic)
            .unwrap()
            .meta
            .configs
            .get(key)
            .cloned()
    }

    #[tokio::test]
    async fn every_version_sets_and_deletes_topic_configs_durably() {
        let t = testing::broker();
        let initial = BTreeMap::from([("retention.bytes".into(), "100".into())]);
        t.broker
            .create_topic("tuned", 1, 1, initial, false)
            .unwrap();
        for version in testing::versions(ApiKey::IncrementalAlterConfigs) {
            let retention = format!("{}", 1000 + i64::from(version));
            let req = request(vec![resource(
                RESOURCE_TOPIC,
                "tuned",
                vec![
                    op("retention.ms", OP_SET, Some(&retention)),
                    op("retention.bytes", OP_DELETE, None),
                ],
            )]);
            let resp = call(&t.broker, version, req).await;
            assert_eq!(
                resp.responses[0].error_code, 0,
                "v{version}: {:?}",
                resp.responses[0].error_message
            );
            assert_eq!(resp.responses[0].resource_name.as_str(), "tuned");
            assert_eq!(
                topic_config(&t, "tuned", "retention.ms"),
                Some(retention.clone())
            );
            assert_eq!(topic_config(&t, "tuned", "retention.bytes"), None);
            let stored = t.broker.metadata().topic("tuned").unwrap();
            assert_eq!(stored.configs.get("retention.ms"), Some(&retention));
        }
    }

    #[tokio::test]
    async fn append_and_subtract_edit_list_configs_only() {
        let t = testing::broker();
        t.broker
            .create_topic("lists", 1, 1, BTreeMap::new(), false)
            .unwrap();
        let alter = |configs| request(vec![resource(RESOURCE_TOPIC, "lists", configs)]);

        let resp = call(
            &t.broker,
            1,
            alter(vec![op("cleanup.policy", OP_APPEND, Some("compact"))]),
        )
        .await;
        assert_eq!(resp.responses[0].error_code, 0);
        assert_eq!(
            topic_config(&t, "lists", "cleanup.policy").as_deref(),
            Some("delete,compact")
        );

        let resp = call(
            &t.broker,
            1,
            alter(vec![op("cleanup.policy", OP_SUBTRACT, Some("delete"))]),
        )
        .await;
        assert_eq!(resp.responses[0].error_code, 0);
        assert_eq!(
            topic_config(&t, "lists", "cleanup.policy").as_deref(),
            Some("compact")
        );

        let resp = call(
            &t.broker,
            1,
            alter(vec![op("retention.ms", OP_APPEND, Some("5"))]),
        )
        .await;
        assert_eq!(
            resp.responses[0].error_code,
            ResponseError::InvalidConfig.code()
        );
        let resp = call(
            &t.broker,
            1,
            alter(vec![op("cleanup.policy", 9, Some("x"))]),
        )
        .await;
        assert_eq!(
            resp.responses[0].error_code,
            ResponseError::InvalidRequest.code()
        );
    }

    #[tokio::test]
    async fn cleanup_policy_can_be_emptied_by_subtract_or_set_and_then_neither_deletes_nor_compacts()
     {
        let t = testing::broker();
        let configs = BTreeMap::from([("cleanup.policy".to_string(), "compact".to_string())]);
        t.broker.create_topic("bare", 1, 1, configs, false).unwrap();
        t.broker
            .create_topic("bare2", 1, 1, BTreeMap::new(), false)
            .unwrap();
        let req = request(vec![
            resource(
                RESOURCE_TOPIC,
                "bare",
                vec![op("cleanup.policy", OP_SUBTRACT, Some("compact"))],
            ),
            resource(
                RESOURCE_TOPIC,
                "bare2",
                vec![op("cleanup.policy", OP_SET, Some(""))],
            ),
        ]);
        let resp = call(&t.broker, 1, req).await;
        for r in &resp.responses {
            assert_eq!(r.error_code, 0, "{:?}", r.error_message);
        }
        for topic in ["bare", "bare2"] {
            assert_eq!(
                topic_config(&t, topic, "cleanup.policy").as_deref(),
                Some("")
            );
            let config = t.broker.partition(topic, 0).unwrap().config();
            assert!(!config.compact, "{topic}");
            assert_eq!(config.retention_ms, None, "{topic}: no time retention");
            assert_eq!(config.retention_bytes, None, "{topic}: no size retention");
        }
    }

    #[tokio::test]
    async fn bad_values_unknown_keys_and_unknown_topics_change_nothing() {
        let t = testing::broker();
        t.broker
            .create_topic("safe", 1, 1, BTreeMap::new(), false)
            .unwrap();
        let req = request(vec![
            resource(
                RESOURCE_TOPIC,
                "safe",
                vec![
                    op("retention.ms", OP_SET, Some("5")),
                    op("retention.bytes", OP_SET, Some("lots")),
                ],
            ),
            resource(
                RESOURCE_TOPIC,
                "safe2",
                vec![op("no.such", OP_SET, Some("1"))],
            ),
            resource(
                RESOURCE_TOPIC,
                "missing",
                vec![op("retention.ms", OP_SET, Some("5"))],
            ),
            resource(
                RESOURCE_TOPIC,
                "safe3",
                vec![
                    op("retention.ms", OP_SET, Some("1")),
                    op("retention.ms", OP_DELETE, None),
                ],
            ),
        ]);
        t.broker
            .create_topic("safe2", 1, 1, BTreeMap::new(), false)
            .unwrap();
        t.broker
            .create_topic("safe3", 1, 1, BTreeMap::new(), false)
            .unwrap();
        let resp = call(&t.broker, 1, req).await;
        let codes: Vec<i16> = resp.responses.iter().map(|r| r.error_code).collect();
        assert_eq!(
            codes,
            [
                ResponseError::InvalidConfig.code(),
                ResponseError::InvalidConfig.code(),
                ResponseError::UnknownTopicOrPartition.code(),
                ResponseError::InvalidRequest.code(),
            ]
        );
        for topic in ["safe", "safe2", "safe3"] {
            assert!(
                t.broker.topic(topic).unwrap().meta.configs.is_empty(),
                "{topic}"
            );
        }
    }

    #[tokio::test]
    async fn validate_only_changes_nothing() {
        let t = testing::broker();
        t.broker
            .create_topic("dry", 1, 1, BTreeMap::new(), false)
            .unwrap();
        let req = request(vec![
            resource(
                RESOURCE_TOPIC,
                "dry",
                vec![op("retention.ms", OP_SET, Some("5"))],
            ),
            resource(
                RESOURCE_BROKER,
                "0",
                vec![op("log.retention.ms", OP_SET, Some("5"))],
            ),
        ])
        .with_validate_only(true);
        let resp = call(&t.broker, 1, req).await;
        assert!(resp.responses.iter().all(|r| r.error_code == 0));
        assert!(t.broker.topic("dry").unwrap().meta.configs.is_empty());
        assert!(t.broker.metadata().broker_configs().is_empty());
    }

    #[tokio::test]
    async fn broker_defaults_accept_only_broker_synonyms_and_persist() {
        let t = testing::broker();
        let req = request(vec![
            resource(
                RESOURCE_BROKER,
                "",
                vec![
                    op("log.retention.ms", OP_SET, Some("60000")),
                    op("log.cleanup.policy", OP_APPEND, Some("compact")),
                ],
            ),
            resource(
                RESOURCE_BROKER,
                "0",
                vec![op("retention.ms", OP_SET, Some("1"))],
            ),
            resource(
                RESOURCE_BROKER,
                "7",
                vec![op("log.retention.ms", OP_SET, Some("1"))],
            ),
        ]);
        let resp = call(&t.broker, 1, req).await;
        let codes: Vec<i16> = resp.responses.iter().map(|r| r.error_code).collect();
        assert_eq!(
            codes,
            [
                0,
                ResponseError::InvalidConfig.code(),
                ResponseError::InvalidRequest.code()
            ]
        );
        let stored = t.broker.metadata().broker_configs();
        assert_eq!(
            stored.get("log.retention.ms").map(String::as_str),
            Some("60000")
        );
        assert_eq!(
            stored.get("log.cleanup.policy").map(String::as_str),
            Some("delete,compact")
        );
        assert_eq!(
            t.broker
                .broker_topic_defaults()
                .get("log.retention.ms")
                .map(String::as_str),
            Some("60000")
        );

        let req = request(vec![resource(
            RESOURCE_BROKER,
            "0",
            vec![op("log.retention.ms", OP_DELETE, None)],
        )]);
        let resp = call(&t.broker, 0, req).await;
        assert_eq!(resp.responses[0].error_code, 0);
        assert!(
            !t.broker
                .metadata()
                .broker_configs()
                .contains_key("log.retention.ms")
        );
    }
}
