//! DescribeQuorum (API key 55): the metadata quorum, as Kafka's KRaft
//! describes its `__cluster_metadata` partition: the leader, its epoch, the
//! high watermark, the voters and observers with how far each has copied
//! the log, and (v2) each voter's controller endpoint.
//!
//! A cluster's store reports its quorum ([`MetadataStore::quorum`]); a
//! single node has none, and answers as a one-node KRaft does: itself the
//! leader and only voter.
//!
//! [`MetadataStore::quorum`]: weir_metadata::MetadataStore::quorum

use kafka_protocol::ResponseError;
use kafka_protocol::messages::describe_quorum_request::TopicData as RequestTopic;
use kafka_protocol::messages::describe_quorum_response::{
    Listener, Node, PartitionData, ReplicaState, TopicData,
};
use kafka_protocol::messages::{
    BrokerId, DescribeQuorumRequest, DescribeQuorumResponse, TopicName,
};
use weir_metadata::{NO_LEADER, QuorumInfo, QuorumReplica};

use crate::admin::str_bytes;
use crate::{Broker, HandlerError, RequestContext};

/// Kafka's metadata log: the one topic-partition DescribeQuorum describes.
const METADATA_TOPIC: &str = "__cluster_metadata";
/// The metadata log's only partition.
const METADATA_PARTITION: i32 = 0;
/// The listener name reported for a controller endpoint (v2): the name
/// Kafka's examples give `controller.listener.names`.
const CONTROLLER_LISTENER_NAME: &str = "CONTROLLER";
/// The epoch a single node reports: a one-node KRaft elects itself once, in
/// epoch 1, and never again.
const SINGLE_NODE_EPOCH: i32 = 1;
/// The first version with error messages and node endpoints (KIP-853).
const NODES_VERSION: i16 = 2;

pub(crate) async fn handle(
    broker: &Broker,
    ctx: &RequestContext,
    req: DescribeQuorumRequest,
) -> Result<DescribeQuorumResponse, HandlerError> {
    if !broker.allowed_on_cluster(ctx, weir_auth::AclOperation::Describe) {
        let denied = crate::acls::cluster_denied(ctx, weir_auth::AclOperation::Describe);
        return Ok(DescribeQuorumResponse::default()
            .with_error_code(denied.code())
            .with_error_message(Some(crate::admin::str_bytes(denied.message))));
    }
    if !names_the_metadata_partition(&req.topics) {
        return Ok(unknown_partitions(req.topics));
    }
    let info = broker
        .metadata()
        .quorum()
        .unwrap_or_else(|| single_node(broker));
    if info.leader_id == NO_LEADER {
        return Ok(single(
            PartitionData::default()
                .with_error_code(ResponseError::NotLeaderOrFollower.code())
                .with_error_message(Some(str_bytes(
                    "the metadata quorum has no leader now; retry",
                ))),
        ));
    }
    let mut response = single(
        PartitionData::default()
            .with_leader_id(BrokerId(info.leader_id))
            .with_leader_epoch(info.leader_epoch)
            .with_high_watermark(info.high_watermark)
            .with_current_voters(replica_states(&info.voters, ctx.version))
            .with_observers(replica_states(&info.observers, ctx.version)),
    );
    // Older versions cannot carry the nodes at all (encoding would fail).
    if ctx.version >= NODES_VERSION {
        response.nodes = info.nodes.iter().map(node).collect();
    }
    Ok(response)
}

/// Kafka's check: exactly one topic, `__cluster_metadata`, with exactly one
/// partition, 0. Anything else, even the right partition among others, is
/// answered UNKNOWN_TOPIC_OR_PARTITION for every partition named.
fn names_the_metadata_partition(topics: &[RequestTopic]) -> bool {
    let [topic] = topics else {
        return false;
    };
    let [partition] = topic.partitions.as_slice() else {
        return false;
    };
    topic.topic_name.as_str() == METADATA_TOPIC && partition.partition_index == METADATA_PARTITION
}

/// Every partition named, UNKNOWN_TOPIC_OR_PARTITION, as Kafka answers
/// (so the answer grows only with the request, which is bounded in size).
fn unknown_partitions(topics: Vec<RequestTopic>) -> DescribeQuorumResponse {
    let message = format!("only {METADATA_TOPIC}-{METADATA_PARTITION} is described");
    let topics = topics
        .into_iter()
        .map(|topic| {
            let partitions = topic
                .partitions
                .iter()
                .map(|p| {
                    PartitionData::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(ResponseError::UnknownTopicOrPartition.code())
                        .with_error_message(Some(str_bytes(message.clone())))
                })
                .collect();
            TopicData::default()
                .with_topic_name(topic.topic_name)
                .with_partitions(partitions)
        })
        .collect();
    DescribeQuorumResponse::default().with_topics(topics)
}

/// A response about the metadata partition alone.
fn single(partition: PartitionData) -> DescribeQuorumResponse {
    DescribeQuorumResponse::default().with_topics(vec![
        TopicData::default()
            .with_topic_name(TopicName(str_bytes(METADATA_TOPIC)))
            .with_partitions(vec![partition.with_partition_index(METADATA_PARTITION)]),
    ])
}

/// A single node's quorum: itself the leader and only voter, no observers.
/// Its metadata log is the local store's record log, so the high watermark
/// and its log end are the number of changes the store has committed (every
/// one is durable before it applies), or 0 when the store cannot say. Being
/// the leader, it has fetched and caught up with itself now, which is what
/// Kafka's leader reports for itself.
fn single_node(broker: &Broker) -> QuorumInfo {
    let node_id = broker.config().node_id;
    let end = broker
        .metadata()
        .change_count()
        .map_or(0, |count| i64::try_from(count).unwrap_or(i64::MAX));
    let now_ms = broker.clock().now_ms();
    QuorumInfo {
        leader_id: node_id,
        leader_epoch: SINGLE_NODE_EPOCH,
        high_watermark: end,
        voters: vec![QuorumReplica {
            replica_id: node_id,
            log_end_offset: end,
            last_fetch_timestamp_ms: now_ms,
            last_caught_up_timestamp_ms: now_ms,
            directory_id: None,
        }],
        observers: Vec::new(),
        // The quorum lives inside this process: there is no controller
        // listener to point at.
        nodes: Vec::new(),
    }
}

/// The replicas as `version` carries them: directory ids from v2 on.
fn replica_states(replicas: &[QuorumReplica], version: i16) -> Vec<ReplicaState> {
    replicas
        .iter()
        .map(|replica| {
            let state = ReplicaState::default()
                .with_replica_id(BrokerId(replica.replica_id))
                .with_log_end_offset(replica.log_end_offset)
                .with_last_fetch_timestamp(replica.last_fetch_timestamp_ms)
                .with_last_caught_up_timestamp(replica.last_caught_up_timestamp_ms);
            match replica.directory_id {
                Some(directory) if version >= NODES_VERSION => {
                    state.with_replica_directory_id(directory)
                }
                _ => state,
            }
        })
        .collect()
}

fn node(node: &weir_metadata::QuorumNode) -> Node {
    Node::default()
        .with_node_id(BrokerId(node.id))
        .with_listeners(vec![
            Listener::default()
                .with_name(str_bytes(CONTROLLER_LISTENER_NAME))
                .with_host(str_bytes(node.host.clone()))
                .with_port(node.port),
        ])
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use kafka_protocol::messages::ApiKey;
    use kafka_protocol::messages::describe_quorum_request::PartitionData as RequestPartition;
    use uuid::Uuid;
    use weir_metadata::{
        ConfigChange, LocalMetadataStore, MetadataError, MetadataStore, NewTopic, QuorumNode,
        TopicMeta,
    };
    use weir_storage::{CommitLog, LogConfig, SystemClock};

    use super::*;
    use crate::BrokerConfig;
    use crate::admin::testing::{self, call};

    fn request(topics: &[(&str, &[i32])]) -> DescribeQuorumRequest {
        DescribeQuorumRequest::default().with_topics(
            topics
                .iter()
                .map(|(name, partitions)| {
                    RequestTopic::default()
                        .with_topic_name(TopicName(str_bytes(*name)))
                        .with_partitions(
                            partitions
                                .iter()
                                .map(|&p| RequestPartition::default().with_partition_index(p))
                                .collect(),
                        )
                })
                .collect(),
        )
    }

    fn metadata_partition() -> DescribeQuorumRequest {
        request(&[(METADATA_TOPIC, &[METADATA_PARTITION])])
    }

    /// The one partition of a successful answer.
    fn partition(resp: &DescribeQuorumResponse) -> &PartitionData {
        assert_eq!(resp.error_code, 0);
        assert_eq!(resp.topics.len(), 1);
        assert_eq!(resp.topics[0].topic_name.as_str(), METADATA_TOPIC);
        assert_eq!(resp.topics[0].partitions.len(), 1);
        &resp.topics[0].partitions[0]
    }

    #[tokio::test]
    async fn a_single_node_is_the_leader_and_only_voter_at_its_change_count() {
        let t = testing::broker_with(BrokerConfig {
            node_id: 3,
            ..BrokerConfig::default()
        });
        t.broker
            .create_topic("orders", 1, 1, BTreeMap::new(), false)
            .unwrap();
        let changes = t.broker.metadata().change_count().unwrap() as i64;
        assert!(changes >= 1);
        for version in testing::versions(ApiKey::DescribeQuorum) {
            let resp = call(&t.broker, version, metadata_partition()).await;
            let p = partition(&resp);
            assert_eq!(p.error_code, 0, "v{version}");
            assert_eq!(p.partition_index, 0);
            assert_eq!(p.leader_id, BrokerId(3));
            assert_eq!(p.leader_epoch, 1);
            assert_eq!(p.high_watermark, changes);
            assert_eq!(p.current_voters.len(), 1);
            let me = &p.current_voters[0];
            assert_eq!((me.replica_id, me.log_end_offset), (BrokerId(3), changes));
            if version >= 1 {
                assert!(me.last_fetch_timestamp > 0);
                assert!(me.last_caught_up_timestamp > 0);
            }
            assert!(p.observers.is_empty());
            assert!(resp.nodes.is_empty());
        }
    }

    #[tokio::test]
    async fn anything_but_the_metadata_partition_alone_is_an_unknown_partition() {
        let t = testing::broker();
        let unknown = ResponseError::UnknownTopicOrPartition.code();
        let cases: [&[(&str, &[i32])]; 5] = [
            &[],
            &[("orders", &[0])],
            &[(METADATA_TOPIC, &[1])],
            &[(METADATA_TOPIC, &[0, 0])],
            &[(METADATA_TOPIC, &[0]), ("orders", &[2, 3])],
        ];
        for case in cases {
            let resp = call(&t.broker, 2, request(case)).await;
            assert_eq!(resp.error_code, 0, "{case:?}");
            let answered: Vec<(&str, i32, i16)> = resp
                .topics
                .iter()
                .flat_map(|t| {
                    t.partitions
                        .iter()
                        .map(|p| (t.topic_name.as_str(), p.partition_index, p.error_code))
                })
                .collect();
            let asked: Vec<(&str, i32, i16)> = case
                .iter()
                .flat_map(|(name, ps)| ps.iter().map(move |&p| (*name, p, unknown)))
                .collect();
            assert_eq!(answered, asked);
        }
    }

    /// A local store that also reports a quorum, as a cluster's store does.
    struct Quorate {
        local: LocalMetadataStore,
        quorum: QuorumInfo,
    }

    impl MetadataStore for Quorate {
        fn cluster_id(&self) -> String {
            self.local.cluster_id()
        }
        fn topics(&self) -> Vec<TopicMeta> {
            self.local.topics()
        }
        fn topic(&self, name: &str) -> Option<TopicMeta> {
            self.local.topic(name)
        }
        fn topic_by_id(&self, id: Uuid) -> Option<TopicMeta> {
            self.local.topic_by_id(id)
        }
        fn create_topic(&self, topic: NewTopic) -> Result<TopicMeta, MetadataError> {
            self.local.create_topic(topic)
        }
        fn delete_topic(&self, name: &str) -> Result<TopicMeta, MetadataError> {
            self.local.delete_topic(name)
        }
        fn set_partition_count(&self, name: &str, total: i32) -> Result<TopicMeta, MetadataError> {
            self.local.set_partition_count(name, total)
        }
        fn alter_topic_configs(
            &self,
            name: &str,
            changes: &[ConfigChange],
        ) -> Result<TopicMeta, MetadataError> {
            self.local.alter_topic_configs(name, changes)
        }
        fn broker_configs(&self) -> BTreeMap<String, String> {
            self.local.broker_configs()
        }
        fn alter_broker_configs(&self, changes: &[ConfigChange]) -> Result<(), MetadataError> {
            self.local.alter_broker_configs(changes)
        }
        fn group_configs(&self, group: &str) -> BTreeMap<String, String> {
            self.local.group_configs(group)
        }
        fn alter_group_configs(
            &self,
            group: &str,
            changes: &[ConfigChange],
        ) -> Result<(), MetadataError> {
            self.local.alter_group_configs(group, changes)
        }
        fn allocate_producer_ids(&self, count: i64) -> Result<i64, MetadataError> {
            self.local.allocate_producer_ids(count)
        }
        fn quorum(&self) -> Option<QuorumInfo> {
            Some(self.quorum.clone())
        }
    }

    fn quorate(quorum: QuorumInfo) -> (Arc<Broker>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(SystemClock);
        let (log, _) = CommitLog::open(dir.path(), LogConfig::default(), clock.clone()).unwrap();
        let metadata = Arc::new(Quorate {
            local: LocalMetadataStore::open(dir.path()).unwrap(),
            quorum,
        });
        let broker = Broker::new(BrokerConfig::default(), log, metadata, clock).unwrap();
        (Arc::new(broker), dir)
    }

    fn replica(id: i32, end: i64, fetched_ms: i64) -> QuorumReplica {
        QuorumReplica {
            replica_id: id,
            log_end_offset: end,
            last_fetch_timestamp_ms: fetched_ms,
            last_caught_up_timestamp_ms: fetched_ms - 5,
            directory_id: None,
        }
    }

    fn three_voters() -> QuorumInfo {
        QuorumInfo {
            leader_id: 2,
            leader_epoch: 7,
            high_watermark: 40,
            voters: vec![
                replica(1, 38, 1_000),
                replica(2, 41, 1_010),
                replica(3, 40, 1_020),
            ],
            observers: vec![replica(4, 12, 900)],
            nodes: (1..=3)
                .map(|id| QuorumNode {
                    id,
                    host: format!("controller-{id}"),
                    port: 9093,
                })
                .collect(),
        }
    }

    #[tokio::test]
    async fn a_cluster_store_answers_with_its_quorum_in_every_version() {
        let (broker, _dir) = quorate(three_voters());
        for version in testing::versions(ApiKey::DescribeQuorum) {
            let resp = call(&broker, version, metadata_partition()).await;
            let p = partition(&resp);
            assert_eq!(p.error_code, 0);
            assert_eq!((p.leader_id, p.leader_epoch), (BrokerId(2), 7));
            assert_eq!(p.high_watermark, 40);
            let states = |replicas: &[ReplicaState]| -> Vec<(i32, i64, i64, i64)> {
                replicas
                    .iter()
                    .map(|r| {
                        (
                            r.replica_id.0,
                            r.log_end_offset,
                            r.last_fetch_timestamp,
                            r.last_caught_up_timestamp,
                        )
                    })
                    .collect()
            };
            if version >= 1 {
                assert_eq!(
                    states(&p.current_voters),
                    [
                        (1, 38, 1_000, 995),
                        (2, 41, 1_010, 1_005),
                        (3, 40, 1_020, 1_015)
                    ]
                );
                assert_eq!(states(&p.observers), [(4, 12, 900, 895)]);
            } else {
                // v0 has no timestamps: a client reads Kafka's default, -1.
                assert_eq!(
                    states(&p.current_voters),
                    [(1, 38, -1, -1), (2, 41, -1, -1), (3, 40, -1, -1)]
                );
            }
            if version >= 2 {
                let nodes: Vec<(i32, &str, &str, u16)> = resp
                    .nodes
                    .iter()
                    .flat_map(|n| {
                        n.listeners
                            .iter()
                            .map(move |l| (n.node_id.0, l.name.as_str(), l.host.as_str(), l.port))
                    })
                    .collect();
                assert_eq!(
                    nodes,
                    [
                        (1, "CONTROLLER", "controller-1", 9093),
                        (2, "CONTROLLER", "controller-2", 9093),
                        (3, "CONTROLLER", "controller-3", 9093),
                    ]
                );
            } else {
                assert!(resp.nodes.is_empty());
            }
        }
    }

    #[tokio::test]
    async fn a_quorum_without_a_leader_is_not_leader_or_follower() {
        let (broker, _dir) = quorate(QuorumInfo {
            leader_id: NO_LEADER,
            ..three_voters()
        });
        for version in testing::versions(ApiKey::DescribeQuorum) {
            let resp = call(&broker, version, metadata_partition()).await;
            assert_eq!(resp.topics.len(), 1);
            let p = &resp.topics[0].partitions[0];
            assert_eq!(p.partition_index, 0);
            assert_eq!(p.error_code, ResponseError::NotLeaderOrFollower.code());
            assert!(p.current_voters.is_empty());
            assert!(resp.nodes.is_empty());
        }
    }
}
