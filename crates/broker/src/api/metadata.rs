//! Metadata: the one broker, the cluster id, and the requested topics with
//! their partitions, auto-creating a missing topic when the request and the
//! broker both allow it.

use std::collections::{HashMap, HashSet};

use kafka_protocol::ResponseError;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;
use weir_auth::{AclOperation, CLUSTER_RESOURCE_NAME, ResourceType};
use weir_metadata::{NO_LEADER, TopicMeta};

use crate::acls::{AUTHORIZED_OPERATIONS_OMITTED, topic_denied};
use crate::error::ApiError;
use crate::topics::{TopicState, is_internal, validate_topic_name};
use crate::{Broker, HandlerError, RequestContext};

pub(crate) async fn handle(
    broker: &std::sync::Arc<Broker>,
    ctx: &RequestContext,
    req: MetadataRequest,
) -> Result<MetadataResponse, HandlerError> {
    let version = ctx.version;
    let config = broker.config();
    let node = BrokerId(config.node_id);
    // Below v4 there is no flag: Kafka treats those requests as allowing it.
    let allow_create = version < 4 || req.allow_auto_topic_creation;
    let wants_topic_operations = version >= 8 && req.include_topic_authorized_operations;
    let topic_operations = |name: &str| match wants_topic_operations {
        true => broker.authorized_operations(ctx, ResourceType::Topic, name),
        false => AUTHORIZED_OPERATIONS_OMITTED,
    };

    let topics = match req.topics {
        // v0 has no null list: an empty one means every topic.
        Some(requested) if !(version == 0 && requested.is_empty()) => {
            let requested = distinct(requested);
            // Creating a topic writes index files and commits metadata:
            // only then is the look-up moved to a blocking thread.
            let creates = allow_create
                && config.auto_create_topics
                && requested
                    .iter()
                    .any(|t| matches!(t, Requested::Name(name) if broker.topic(name).is_none()));
            let shared = broker.clone();
            let ctx = ctx.clone();
            let look_up = move || {
                requested
                    .into_iter()
                    .map(|t| match t {
                        // Kafka answers a topic the client may not describe
                        // as unauthorized, whether it exists or not, and
                        // auto-creates only for a client that may create it.
                        Requested::Name(name)
                            if !shared.allowed_on_topic(&ctx, AclOperation::Describe, &name) =>
                        {
                            Lookup::Failed {
                                error: topic_denied(&ctx, AclOperation::Describe, &name),
                                name: Some(name),
                                id: Uuid::nil(),
                            }
                        }
                        Requested::Name(name) => {
                            let create = allow_create && shared.may_create_topic(&ctx, &name);
                            by_name(&shared, &name, create)
                        }
                        Requested::Id(id) => match by_id(&shared, id) {
                            Lookup::Found(state)
                                if !shared.allowed_on_topic(
                                    &ctx,
                                    AclOperation::Describe,
                                    &state.meta.name,
                                ) =>
                            {
                                Lookup::Failed {
                                    error: topic_denied(
                                        &ctx,
                                        AclOperation::Describe,
                                        &state.meta.name,
                                    ),
                                    name: None,
                                    id,
                                }
                            }
                            lookup => lookup,
                        },
                    })
                    .collect::<Vec<_>>()
            };
            if creates {
                crate::blocking::run(look_up).await?
            } else {
                look_up()
            }
        }
        // Every topic the client may describe; the others are left out.
        _ => broker
            .topic_list()
            .into_iter()
            .filter(|state| {
                broker.allowed_quietly(
                    ctx,
                    AclOperation::Describe,
                    ResourceType::Topic,
                    &state.meta.name,
                )
            })
            .map(Lookup::Found)
            .collect(),
    };

    // A cluster's registered brokers, as KRaft answers: the unfenced ones
    // (a fenced broker serves nothing) that have the listener the request
    // came in on, at their endpoint of it. A single node knows only itself.
    let registered = broker.metadata().brokers();
    let listener = &*ctx.listener;
    let listed_broker = |id: i32, (host, port): (&str, i32), rack: Option<&String>| {
        MetadataResponseBroker::default()
            .with_node_id(BrokerId(id))
            .with_host(StrBytes::from_string(host.to_owned()))
            .with_port(port)
            .with_rack(rack.cloned().map(StrBytes::from_string))
    };
    let brokers: Vec<MetadataResponseBroker> = if registered.is_empty() {
        config
            .endpoint(listener)
            .map(|endpoint| listed_broker(node.0, endpoint, None))
            .into_iter()
            .collect()
    } else {
        registered
            .iter()
            .filter(|b| !b.fenced)
            .filter_map(|b| {
                b.endpoint(listener)
                    .map(|endpoint| listed_broker(b.id, endpoint, b.rack.as_ref()))
            })
            .collect()
    };
    // A cluster's assignments change under the registry (leaders move, ISRs
    // shrink): read them fresh, once per request. A single node's never do.
    let fresh: HashMap<Uuid, TopicMeta> = if registered.is_empty() {
        HashMap::new()
    } else {
        broker
            .metadata()
            .topics()
            .into_iter()
            .map(|t| (t.id, t))
            .collect()
    };
    let reach = Reach {
        alive: registered
            .iter()
            .filter(|b| !b.fenced)
            .map(|b| b.id)
            .collect(),
        listed: brokers.iter().map(|b| b.node_id.0).collect(),
        // Kafka names the cause from v6; older clients only know to retry.
        unlisted_leader: if version >= 6 {
            ResponseError::ListenerNotFound
        } else {
            ResponseError::LeaderNotAvailable
        },
    };

    let topics = topics
        .into_iter()
        .map(|lookup| match lookup {
            // A view's partitions are its source's: same leaders, replicas
            // and ISR, so a consumer fetches the view where the data is.
            Lookup::Found(state) => match broker.data_topic(state.clone()) {
                Ok((data, _)) => {
                    let meta = fresh.get(&data.meta.id).unwrap_or(&data.meta);
                    describe(
                        &data,
                        meta,
                        node,
                        &reach,
                        topic_operations(&state.meta.name),
                    )
                    .with_name(Some(TopicName(StrBytes::from_string(
                        state.meta.name.clone(),
                    ))))
                    .with_topic_id(state.meta.id)
                    .with_is_internal(is_internal(&state.meta.name))
                }
                Err(error) => MetadataResponseTopic::default()
                    .with_error_code(error.code())
                    .with_name(Some(TopicName(StrBytes::from_string(
                        state.meta.name.clone(),
                    ))))
                    .with_topic_id(state.meta.id)
                    .with_topic_authorized_operations(topic_operations(&state.meta.name)),
            },
            Lookup::Failed { name, id, error } => MetadataResponseTopic::default()
                .with_error_code(error.code())
                .with_name(name.map(|n| TopicName(StrBytes::from_string(n))))
                .with_topic_id(id)
                .with_topic_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED),
        })
        .collect();

    let cluster_operations =
        if (8..=10).contains(&version) && req.include_cluster_authorized_operations {
            broker.authorized_operations(ctx, ResourceType::Cluster, CLUSTER_RESOURCE_NAME)
        } else {
            AUTHORIZED_OPERATIONS_OMITTED
        };
    Ok(MetadataResponse::default()
        .with_throttle_time_ms(0)
        .with_brokers(brokers)
        .with_cluster_id(Some(StrBytes::from_string(broker.metadata().cluster_id())))
        .with_controller_id(BrokerId(super::describe_cluster::controller_for_clients(
            node.0,
            &registered,
        )))
        .with_topics(topics)
        .with_cluster_authorized_operations(cluster_operations)
        .with_error_code(0))
}

/// A topic a request names, by name or (v10+) by id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Requested {
    Name(String),
    Id(Uuid),
}

/// The requested topics, each once, in the order first named. Kafka reads
/// the list as a set; answering every repetition would let a small request
/// build a response as many times larger as it repeats a large topic.
fn distinct(requested: Vec<MetadataRequestTopic>) -> Vec<Requested> {
    let mut seen = HashSet::with_capacity(requested.len());
    let mut topics = Vec::with_capacity(requested.len());
    for topic in requested {
        let key = match topic.name {
            Some(name) => Requested::Name(name.0.to_string()),
            None => Requested::Id(topic.topic_id),
        };
        if !seen.contains(&key) {
            seen.insert(key.clone());
            topics.push(key);
        }
    }
    topics
}

enum Lookup {
    Found(std::sync::Arc<TopicState>),
    Failed {
        name: Option<String>,
        id: Uuid,
        error: ApiError,
    },
}

fn by_name(broker: &Broker, name: &str, allow_create: bool) -> Lookup {
    if let Some(state) = broker.topic(name) {
        return Lookup::Found(state);
    }
    let failed = |error| Lookup::Failed {
        name: Some(name.to_string()),
        id: Uuid::nil(),
        error,
    };
    if let Err(error) = validate_topic_name(name) {
        return failed(error);
    }
    if !allow_create {
        return failed(ApiError::unknown_topic(name));
    }
    match broker.topic_or_auto_create(name) {
        Ok(state) => Lookup::Found(state),
        Err(error) => {
            if error.code == ResponseError::KafkaStorageError {
                tracing::error!(topic = %name, error = %error, "cannot auto-create topic");
            }
            failed(error)
        }
    }
}

fn by_id(broker: &Broker, id: Uuid) -> Lookup {
    match broker.topic_by_id(id) {
        Some(state) => Lookup::Found(state),
        None => Lookup::Failed {
            name: None,
            id,
            error: ApiError::new(
                ResponseError::UnknownTopicId,
                format!("no topic has id {id}"),
            ),
        },
    }
}

/// The brokers a Metadata answer can name.
struct Reach {
    /// The unfenced brokers; empty on a single node, where nothing is offline.
    alive: HashSet<i32>,
    /// The brokers listed in the answer: the unfenced ones with the
    /// request's listener.
    listed: HashSet<i32>,
    /// The error of a partition whose leader lacks the request's listener.
    unlisted_leader: ResponseError,
}

/// A topic's partitions as the metadata assigns them: leader, replicas,
/// ISR, and as offline the replicas on brokers that are fenced or gone. A
/// partition without a leader is LEADER_NOT_AVAILABLE, so clients refresh
/// and retry; one whose leader has no listener of the request's name is
/// LISTENER_NOT_FOUND, with no leader, as Kafka answers. `meta` is the
/// metadata store's current copy of the topic (the registry's is as of
/// when the topic was opened here).
fn describe(
    state: &TopicState,
    meta: &TopicMeta,
    node: BrokerId,
    reach: &Reach,
    topic_operations: i32,
) -> MetadataResponseTopic {
    let partitions = (0..meta.partitions)
        .map(|index| {
            let local_epoch = state.local(index).map_or(0, |p| p.leader_epoch());
            let Some(a) = meta.assignment(index, node.0) else {
                return MetadataResponsePartition::default()
                    .with_error_code(ResponseError::UnknownTopicOrPartition.code())
                    .with_partition_index(index);
            };
            // A single node's partitions carry no assignment: their epoch
            // is the one the storage keeps.
            let leader_epoch = if meta.assignments.is_empty() {
                local_epoch
            } else {
                a.leader_epoch
            };
            let ids = |v: &[i32]| v.iter().copied().map(BrokerId).collect::<Vec<_>>();
            let offline: Vec<i32> = if reach.alive.is_empty() {
                Vec::new()
            } else {
                a.replicas
                    .iter()
                    .copied()
                    .filter(|r| !reach.alive.contains(r))
                    .collect()
            };
            let (error, leader) = if a.leader == NO_LEADER {
                (ResponseError::LeaderNotAvailable.code(), NO_LEADER)
            } else if !reach.listed.contains(&a.leader) && reach.alive.contains(&a.leader) {
                (reach.unlisted_leader.code(), NO_LEADER)
            } else {
                (0, a.leader)
            };
            MetadataResponsePartition::default()
                .with_error_code(error)
                .with_partition_index(index)
                .with_leader_id(BrokerId(leader))
                .with_leader_epoch(leader_epoch)
                .with_replica_nodes(ids(&a.replicas))
                .with_isr_nodes(ids(&a.isr))
                .with_offline_replicas(ids(&offline))
        })
        .collect();
    MetadataResponseTopic::default()
        .with_error_code(0)
        .with_name(Some(TopicName(StrBytes::from_string(meta.name.clone()))))
        .with_topic_id(meta.id)
        .with_is_internal(is_internal(&meta.name))
        .with_partitions(partitions)
        .with_topic_authorized_operations(topic_operations)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_topic_named_twice_is_answered_once() {
        let named = |name: &str| {
            MetadataRequestTopic::default()
                .with_name(Some(TopicName(StrBytes::from_string(name.to_string()))))
        };
        let by_id = |id: u128| {
            MetadataRequestTopic::default()
                .with_name(None)
                .with_topic_id(Uuid::from_u128(id))
        };
        let requested = vec![
            named("b"),
            named("a"),
            named("b"),
            by_id(7),
            by_id(7),
            named("a"),
        ];
        assert_eq!(
            distinct(requested),
            [
                Requested::Name("b".into()),
                Requested::Name("a".into()),
                Requested::Id(Uuid::from_u128(7)),
            ]
        );
    }

    #[tokio::test]
    async fn without_an_authorizer_every_operation_is_authorized_with_kafka_bits() {
        let t = crate::admin::testing::broker();
        let req = MetadataRequest::default()
            .with_topics(None)
            .with_include_topic_authorized_operations(true)
            .with_include_cluster_authorized_operations(true);
        t.broker
            .create_topic("bits", 1, 1, Default::default(), false)
            .unwrap();
        let resp = crate::admin::testing::call(&t.broker, 10, req).await;
        let topic = resp
            .topics
            .iter()
            .find(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == "bits"));
        // READ, WRITE, CREATE, DELETE, ALTER, DESCRIBE, DESCRIBE_CONFIGS, ALTER_CONFIGS.
        assert_eq!(
            topic.map(|t| t.topic_authorized_operations),
            Some(0b1101_1111_1000)
        );
        // CREATE, ALTER, DESCRIBE, CLUSTER_ACTION, DESCRIBE_CONFIGS,
        // ALTER_CONFIGS, IDEMPOTENT_WRITE.
        assert_eq!(resp.cluster_authorized_operations, 0b1_1111_1010_0000);
    }
}
