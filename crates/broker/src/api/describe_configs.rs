//! DescribeConfigs (API key 32): the effective configs of a topic or of this
//! broker, with where each value comes from, and on request its synonyms
//! (every level that sets it) and documentation.
//!
//! A BROKER resource named by this node's id lists the broker-level topic
//! defaults (`log.retention.ms`, ...) and a few read-only start-up settings;
//! the empty name lists only the cluster-wide defaults set at runtime, as
//! Kafka does. A GROUP resource lists the group configs Weir acts on
//! (`crate::group_config`), set on the group or not. Other resource types
//! are INVALID_REQUEST.

use std::collections::BTreeSet;

use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};

use weir_auth::AclOperation;

use crate::admin::{self, RESOURCE_BROKER, RESOURCE_TOPIC, str_bytes};
use crate::error::ApiError;
use crate::group_config::{self, RESOURCE_GROUP};
use crate::topic_config::{self, ConfigSource, Synonym};
use crate::topics::validate_topic_name;
use crate::view::{VIEW_SOURCE, VIEW_TAGS};
use crate::{Broker, BrokerConfig, HandlerError, RequestContext};

/// Kafka's config type numbers for the start-up settings listed.
const TYPE_BOOLEAN: i8 = 1;
const TYPE_STRING: i8 = 2;
const TYPE_INT: i8 = 3;

/// One config as described, before it is put in the response.
struct Entry {
    name: String,
    value: String,
    source: ConfigSource,
    read_only: bool,
    config_type: i8,
    doc: String,
    synonyms: Vec<Synonym>,
}

pub(crate) async fn handle(
    broker: &Broker,
    ctx: &RequestContext,
    mut req: DescribeConfigsRequest,
) -> Result<DescribeConfigsResponse, HandlerError> {
    // One answer per resource, however often it is named.
    let resources = super::first_of_each(std::mem::take(&mut req.resources), |r| {
        (r.resource_type, r.resource_name.clone())
    });
    let results = resources
        .iter()
        .map(|resource| describe(broker, ctx, &req, resource))
        .collect();
    Ok(DescribeConfigsResponse::default().with_results(results))
}

fn describe(
    broker: &Broker,
    ctx: &RequestContext,
    req: &DescribeConfigsRequest,
    resource: &DescribeConfigsResource,
) -> DescribeConfigsResult {
    let name = resource.resource_name.as_str();
    let denial = crate::acls::config_denial(
        broker,
        ctx,
        AclOperation::DescribeConfigs,
        (resource.resource_type, name),
    );
    let entries = match (denial, resource.resource_type) {
        (Some(denied), _) => Err(denied),
        (None, RESOURCE_TOPIC) => topic_entries(broker, name),
        (None, RESOURCE_BROKER) => broker_entries(broker, name),
        (None, RESOURCE_GROUP) => group_entries(broker, name),
        (None, other) => Err(admin::invalid_request(format!(
            "config resource type {other} is not described by Weir; TOPIC ({RESOURCE_TOPIC}), \
             BROKER ({RESOURCE_BROKER}) and GROUP ({RESOURCE_GROUP}) are"
        ))),
    };
    let base = DescribeConfigsResult::default()
        .with_resource_type(resource.resource_type)
        .with_resource_name(resource.resource_name.clone());
    let entries = match entries {
        Ok(entries) => entries,
        Err(err) => {
            return base
                .with_error_code(err.code())
                .with_error_message(Some(str_bytes(err.message)));
        }
    };
    // Kafka treats an empty key list like a null one: describe everything.
    let wanted: Option<BTreeSet<&str>> = resource
        .configuration_keys
        .as_ref()
        .filter(|keys| !keys.is_empty())
        .map(|keys| keys.iter().map(|k| k.as_str()).collect());
    let configs = entries
        .into_iter()
        .filter(|entry| {
            wanted
                .as_ref()
                .is_none_or(|w| w.contains(entry.name.as_str()))
        })
        .map(|entry| to_wire(entry, req.include_synonyms, req.include_documentation))
        .collect();
    base.with_configs(configs)
}

fn to_wire(entry: Entry, synonyms: bool, documentation: bool) -> DescribeConfigsResourceResult {
    let synonyms = if synonyms {
        entry
            .synonyms
            .into_iter()
            .map(|s| {
                DescribeConfigsSynonym::default()
                    .with_name(str_bytes(s.name))
                    .with_value(Some(str_bytes(s.value)))
                    .with_source(s.source.kafka_id())
            })
            .collect()
    } else {
        Vec::new()
    };
    DescribeConfigsResourceResult::default()
        .with_name(str_bytes(entry.name))
        .with_value(Some(str_bytes(entry.value)))
        .with_read_only(entry.read_only)
        .with_config_source(entry.source.kafka_id())
        .with_is_sensitive(false)
        .with_synonyms(synonyms)
        .with_config_type(entry.config_type)
        .with_documentation(documentation.then(|| str_bytes(entry.doc)))
}

/// Every topic config with its effective value for `name`.
fn topic_entries(broker: &Broker, name: &str) -> Result<Vec<Entry>, ApiError> {
    validate_topic_name(name)?;
    let state = broker
        .topic(name)
        .ok_or_else(|| ApiError::unknown_topic(name))?;
    // A view lists its source and filter, then the source's configs, which
    // are what apply to its data; none of them can be changed on the view.
    let (mut entries, data, read_only) = match &state.view {
        Some(view) => {
            let entry = |key: &'static str, doc: &str| {
                let value = state.meta.configs.get(key).cloned().unwrap_or_default();
                Entry {
                    name: key.to_string(),
                    value: value.clone(),
                    source: ConfigSource::Topic,
                    read_only: true,
                    config_type: TYPE_STRING,
                    doc: doc.to_string(),
                    synonyms: vec![Synonym {
                        name: key,
                        value,
                        source: ConfigSource::Topic,
                    }],
                }
            };
            let entries = vec![
                entry(VIEW_SOURCE, "the topic whose records this view serves"),
                entry(
                    VIEW_TAGS,
                    "the RocketMQ tag expression (weir.tag header) a record must match",
                ),
            ];
            (entries, broker.view_source(view, name)?, true)
        }
        None => (Vec::new(), state, false),
    };
    entries.extend(
        admin::config_chains(broker, Some(&data.meta.configs))
            .into_iter()
            .filter_map(|(def, chain)| {
                let effective = chain.first()?.clone();
                Some(Entry {
                    name: def.name.to_string(),
                    value: effective.value,
                    source: effective.source,
                    read_only,
                    config_type: def.kind.kafka_type(),
                    doc: topic_config::documentation(def),
                    synonyms: chain,
                })
            }),
    );
    Ok(entries)
}

/// Every group config with its effective value for group `group`: set on
/// the group (GROUP_CONFIG), else the broker's or Weir's default.
fn group_entries(broker: &Broker, group: &str) -> Result<Vec<Entry>, ApiError> {
    group_config::check_group_id(group)?;
    let own = broker.metadata().group_configs(group);
    let defaults = &broker.config().group;
    Ok(group_config::GROUP_CONFIGS
        .iter()
        .map(|def| {
            let default = Synonym {
                name: def.name,
                value: group_config::default_value(def, defaults, group),
                source: ConfigSource::Default,
            };
            let synonyms = match own.get(def.name) {
                Some(value) => vec![
                    Synonym {
                        name: def.name,
                        value: value.clone(),
                        source: ConfigSource::Group,
                    },
                    default,
                ],
                None => vec![default],
            };
            Entry {
                name: def.name.to_string(),
                value: synonyms[0].value.clone(),
                source: synonyms[0].source,
                read_only: false,
                config_type: group_config::kafka_type(def),
                doc: def.doc.to_string(),
                synonyms,
            }
        })
        .collect())
}

/// This broker's configs: "" is the cluster-wide runtime defaults only.
fn broker_entries(broker: &Broker, name: &str) -> Result<Vec<Entry>, ApiError> {
    admin::check_broker_resource(broker, name)?;
    if name.is_empty() {
        return Ok(cluster_default_entries(broker));
    }
    let mut entries: Vec<Entry> = admin::config_chains(broker, None)
        .into_iter()
        .filter_map(|(def, chain)| {
            // Topic configs without a broker-level name have no broker value.
            let name = def.broker_synonym?;
            let effective = chain.first()?.clone();
            Some(Entry {
                name: name.to_string(),
                value: effective.value,
                source: effective.source,
                read_only: false,
                config_type: def.kind.kafka_type(),
                doc: topic_config::documentation(def),
                synonyms: chain,
            })
        })
        .collect();
    let config = broker.config();
    let fixed = [
        (
            "node.id",
            config.node_id.to_string(),
            TYPE_INT,
            "this broker's id",
        ),
        (
            "num.partitions",
            config.default_partitions.to_string(),
            TYPE_INT,
            "partitions of a topic created without a count, or auto-created",
        ),
        (
            "auto.create.topics.enable",
            config.auto_create_topics.to_string(),
            TYPE_BOOLEAN,
            "create a topic when a client produces to it or asks for its metadata",
        ),
        (
            "socket.request.max.bytes",
            config.max_request_bytes.to_string(),
            TYPE_INT,
            "largest request accepted, in bytes",
        ),
        (
            "advertised.listeners",
            advertised_listeners(config),
            TYPE_STRING,
            "the addresses clients are told to connect to, by listener name",
        ),
        (
            "inter.broker.listener.name",
            config.inter_broker_listener.clone(),
            TYPE_STRING,
            "the listener other brokers connect to",
        ),
    ];
    for (key, value, config_type, doc) in fixed {
        entries.push(Entry {
            name: key.to_string(),
            synonyms: vec![Synonym {
                name: key,
                value: value.clone(),
                source: ConfigSource::StaticBroker,
            }],
            value,
            source: ConfigSource::StaticBroker,
            read_only: true,
            config_type,
            doc: doc.to_string(),
        });
    }
    Ok(entries)
}

/// The broker-level defaults set at runtime (DYNAMIC_DEFAULT_BROKER_CONFIG).
fn cluster_default_entries(broker: &Broker) -> Vec<Entry> {
    broker
        .metadata()
        .broker_configs()
        .into_iter()
        .filter_map(|(key, value)| {
            let def = topic_config::definition_by_broker_name(&key)?;
            let synonym = def.broker_synonym?;
            Some(Entry {
                name: key,
                synonyms: vec![Synonym {
                    name: synonym,
                    value: value.clone(),
                    source: ConfigSource::BrokerDefault,
                }],
                value,
                source: ConfigSource::BrokerDefault,
                read_only: false,
                config_type: def.kind.kafka_type(),
                doc: topic_config::documentation(def),
            })
        })
        .collect()
}

/// `advertised.listeners` as Kafka writes it: `NAME://HOST:PORT,...`.
fn advertised_listeners(config: &BrokerConfig) -> String {
    if config.listeners.is_empty() {
        return format!(
            "{}://{}:{}",
            crate::DEFAULT_LISTENER,
            config.advertised_host,
            config.advertised_port
        );
    }
    let host = |host: &str| {
        if host.contains(':') {
            format!("[{host}]")
        } else {
            host.to_owned()
        }
    };
    config
        .listeners
        .iter()
        .map(|e| format!("{}://{}:{}", e.listener, host(&e.host), e.port))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use kafka_protocol::ResponseError;
    use kafka_protocol::messages::ApiKey;
    use kafka_protocol::protocol::StrBytes;
    use weir_metadata::ConfigChange;

    use super::*;
    use crate::BrokerConfig;
    use crate::admin::testing::{self, call};

    fn resource(kind: i8, name: &str, keys: Option<&[&str]>) -> DescribeConfigsResource {
        DescribeConfigsResource::default()
            .with_resource_type(kind)
            .with_resource_name(str_bytes(name))
            .with_configuration_keys(keys.map(|k| k.iter().map(|s| str_bytes(*s)).collect()))
    }

    fn find<'a>(
        result: &'a DescribeConfigsResult,
        name: &str,
    ) -> &'a DescribeConfigsResourceResult {
        result
            .configs
            .iter()
            .find(|c| c.name.as_str() == name)
            .unwrap_or_else(|| panic!("{name} not described"))
    }

    fn value(entry: &DescribeConfigsResourceResult) -> Option<&str> {
        entry.value.as_ref().map(StrBytes::as_str)
    }

    #[tokio::test]
    async fn every_version_describes_each_topic_config_with_its_source() {
        let config = BrokerConfig {
            log_defaults: BTreeMap::from([("log.retention.bytes".into(), "999".into())]),
            ..BrokerConfig::default()
        };
        let t = testing::broker_with(config);
        let topic_configs = BTreeMap::from([("retention.ms".into(), "1000".into())]);
        t.broker
            .create_topic("described", 1, 1, topic_configs, false)
            .unwrap();
        t.broker
            .metadata()
            .alter_broker_configs(&[ConfigChange::Set(
                "log.cleanup.policy".into(),
                "compact".into(),
            )])
            .unwrap();
        for version in testing::versions(ApiKey::DescribeConfigs) {
            let req = DescribeConfigsRequest::default().with_resources(vec![resource(
                RESOURCE_TOPIC,
                "described",
                None,
            )]);
            let resp = call(&t.broker, version, req).await;
            let result = &resp.results[0];
            assert_eq!(result.error_code, 0, "v{version}");
            assert_eq!(result.configs.len(), topic_config::TOPIC_CONFIGS.len());
            let expect = [
                ("retention.ms", "1000", 1),
                ("cleanup.policy", "compact", 3),
                ("retention.bytes", "999", 4),
                ("max.message.bytes", "1048588", 5),
            ];
            for (name, want, source) in expect {
                let entry = find(result, name);
                assert_eq!(value(entry), Some(want), "v{version} {name}");
                assert_eq!(entry.config_source, source, "v{version} {name}");
                assert!(!entry.read_only && !entry.is_sensitive);
                assert!(entry.synonyms.is_empty(), "synonyms only when asked");
                if version >= 3 {
                    // Older versions have no such field; the decoder fills in its default.
                    assert!(
                        entry.documentation.is_none(),
                        "documentation only when asked"
                    );
                }
            }
            if version >= 3 {
                assert_eq!(find(result, "retention.ms").config_type, 5, "LONG");
                assert_eq!(find(result, "cleanup.policy").config_type, 7, "LIST");
                assert_eq!(
                    find(result, "message.timestamp.type").config_type,
                    2,
                    "STRING"
                );
            }
        }
    }

    #[tokio::test]
    async fn synonyms_documentation_and_key_filter_are_served_when_asked() {
        let t = testing::broker();
        let topic_configs = BTreeMap::from([("retention.ms".into(), "1000".into())]);
        t.broker
            .create_topic("described", 1, 1, topic_configs, false)
            .unwrap();
        for version in testing::versions(ApiKey::DescribeConfigs) {
            let req = DescribeConfigsRequest::default()
                .with_include_synonyms(true)
                .with_include_documentation(version >= 3)
                .with_resources(vec![resource(
                    RESOURCE_TOPIC,
                    "described",
                    Some(&["retention.ms", "no.such.key"]),
                )]);
            let resp = call(&t.broker, version, req).await;
            let configs = &resp.results[0].configs;
            assert_eq!(configs.len(), 1, "v{version}: only the asked key");
            let synonyms: Vec<(&str, i8)> = configs[0]
                .synonyms
                .iter()
                .map(|s| (s.name.as_str(), s.source))
                .collect();
            assert_eq!(synonyms, [("retention.ms", 1), ("log.retention.ms", 5)]);
            if version >= 3 {
                assert!(configs[0].documentation.is_some());
            }
        }
    }

    #[tokio::test]
    async fn broker_resource_lists_log_defaults_and_static_settings() {
        let config = BrokerConfig {
            node_id: 3,
            advertised_host: "kafka.example".into(),
            advertised_port: 19092,
            log_defaults: BTreeMap::from([("log.retention.ms".into(), "5000".into())]),
            ..BrokerConfig::default()
        };
        let t = testing::broker_with(config);
        t.broker
            .metadata()
            .alter_broker_configs(&[ConfigChange::Set("log.retention.bytes".into(), "77".into())])
            .unwrap();
        let req = DescribeConfigsRequest::default().with_resources(vec![
            resource(RESOURCE_BROKER, "3", None),
            resource(RESOURCE_BROKER, "", None),
            resource(RESOURCE_BROKER, "4", None),
            resource(8, "3", None),
            resource(RESOURCE_TOPIC, "missing", None),
        ]);
        let resp = call(&t.broker, 4, req).await;
        let node = &resp.results[0];
        assert_eq!(node.error_code, 0);
        assert_eq!(value(find(node, "log.retention.ms")), Some("5000"));
        assert_eq!(find(node, "log.retention.ms").config_source, 4);
        assert_eq!(value(find(node, "log.retention.bytes")), Some("77"));
        assert_eq!(find(node, "log.retention.bytes").config_source, 3);
        assert_eq!(find(node, "log.cleanup.policy").config_source, 5);
        assert_eq!(value(find(node, "node.id")), Some("3"));
        assert!(find(node, "node.id").read_only);
        assert_eq!(value(find(node, "num.partitions")), Some("4"));
        assert_eq!(value(find(node, "auto.create.topics.enable")), Some("true"));
        assert_eq!(
            value(find(node, "advertised.listeners")),
            Some("PLAINTEXT://kafka.example:19092")
        );

        let defaults = &resp.results[1];
        assert_eq!(defaults.error_code, 0);
        let names: Vec<&str> = defaults.configs.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["log.retention.bytes"]);
        assert_eq!(defaults.configs[0].config_source, 3);

        let codes: Vec<i16> = resp.results[2..].iter().map(|r| r.error_code).collect();
        assert_eq!(
            codes,
            [
                ResponseError::InvalidRequest.code(),
                ResponseError::InvalidRequest.code(),
                ResponseError::UnknownTopicOrPartition.code(),
            ]
        );
        assert!(resp.results[2..].iter().all(|r| r.configs.is_empty()));
    }
}
