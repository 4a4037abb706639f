//! DescribeCluster (API key 60): the cluster id, the controller (see
//! [`controller_for_clients`]), and the brokers with their advertised
//! addresses and racks: a cluster's registered ones, fenced ones too when
//! the request asks (v2).

use kafka_protocol::ResponseError;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};

use weir_metadata::BrokerInfo;

use crate::acls::AUTHORIZED_OPERATIONS_OMITTED;
use crate::admin::str_bytes;
use crate::{Broker, HandlerError, RequestContext};

/// Endpoint type asking for brokers (v1+); the other, 2, asks for controllers.
const ENDPOINT_TYPE_BROKERS: i8 = 1;

/// The controller id Metadata and DescribeCluster give clients, who send
/// their admin requests (CreateTopics, ...) there. As in KRaft, where the
/// quorum's controllers are not brokers clients can reach, it is a live
/// broker, since every broker forwards what needs the quorum: this one when
/// it is unfenced (the client's connection is already open), else the
/// lowest unfenced one, else -1 (none: the client asks again later). Never
/// the quorum's leader as such: it may be fenced, controller-only, or dead
/// until the next election. A single node (no `registered` brokers) is its
/// own controller.
pub(crate) fn controller_for_clients(node_id: i32, registered: &[BrokerInfo]) -> i32 {
    if registered.is_empty() {
        return node_id;
    }
    let alive = registered.iter().filter(|b| !b.fenced).map(|b| b.id);
    if alive.clone().any(|id| id == node_id) {
        return node_id;
    }
    alive.min().unwrap_or(-1)
}

pub(crate) async fn handle(
    broker: &Broker,
    ctx: &RequestContext,
    req: DescribeClusterRequest,
) -> Result<DescribeClusterResponse, HandlerError> {
    let config = broker.config();
    let registered = broker.metadata().brokers();
    let response = DescribeClusterResponse::default()
        .with_endpoint_type(req.endpoint_type)
        .with_cluster_id(str_bytes(broker.metadata().cluster_id()))
        .with_controller_id(BrokerId(controller_for_clients(
            config.node_id,
            &registered,
        )))
        .with_cluster_authorized_operations(if req.include_cluster_authorized_operations {
            broker.authorized_operations(
                ctx,
                weir_auth::ResourceType::Cluster,
                weir_auth::CLUSTER_RESOURCE_NAME,
            )
        } else {
            AUTHORIZED_OPERATIONS_OMITTED
        });
    if !broker.allowed_on_cluster(ctx, weir_auth::AclOperation::Describe) {
        return Ok(response
            .with_error_code(ResponseError::ClusterAuthorizationFailed.code())
            .with_error_message(Some(str_bytes(format!(
                "{} may not describe the cluster",
                ctx.principal
            )))));
    }
    if req.endpoint_type != ENDPOINT_TYPE_BROKERS {
        // Kafka's brokers answer this way; controllers are reached on their own listener.
        return Ok(response
            .with_error_code(ResponseError::UnsupportedEndpointType.code())
            .with_error_message(Some(str_bytes(format!(
                "endpoint type {} is not served; this listener describes brokers (1)",
                req.endpoint_type
            ))))
            .with_controller_id(BrokerId(-1)));
    }
    // Each broker at its endpoint of the listener the request came in on;
    // one without that listener cannot be reached by this client and is
    // left out, as Kafka does.
    let listener = &*ctx.listener;
    let described = |id: i32, (host, port): (&str, i32), rack: Option<&String>, fenced: bool| {
        DescribeClusterBroker::default()
            .with_broker_id(BrokerId(id))
            .with_host(str_bytes(host.to_owned()))
            .with_port(port)
            .with_rack(rack.cloned().map(str_bytes))
            .with_is_fenced(fenced)
    };
    if registered.is_empty() {
        let me = config
            .endpoint(listener)
            .map(|endpoint| described(config.node_id, endpoint, None, false));
        return Ok(response.with_brokers(me.into_iter().collect()));
    }
    let brokers = registered
        .iter()
        .filter(|b| req.include_fenced_brokers || !b.fenced)
        .filter_map(|b| {
            b.endpoint(listener)
                .map(|endpoint| described(b.id, endpoint, b.rack.as_ref(), b.fenced))
        })
        .collect();
    Ok(response.with_brokers(brokers))
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::ApiKey;

    use super::*;
    use crate::BrokerConfig;
    use crate::admin::testing::{self, call};

    #[test]
    fn clients_are_sent_to_a_live_broker_for_the_controller() {
        let broker = |id, fenced| BrokerInfo {
            id,
            host: "h".into(),
            port: 9092,
            rack: None,
            endpoints: Vec::new(),
            fenced,
            epoch: 1,
        };
        assert_eq!(controller_for_clients(4, &[]), 4, "a single node");
        let all = [broker(1, false), broker(2, false), broker(3, true)];
        assert_eq!(controller_for_clients(2, &all), 2, "itself when unfenced");
        assert_eq!(
            controller_for_clients(3, &all),
            1,
            "else the lowest live one"
        );
        assert_eq!(
            controller_for_clients(9, &all),
            1,
            "a node without a broker"
        );
        assert_eq!(
            controller_for_clients(1, &[broker(1, true)]),
            -1,
            "none live"
        );
    }

    #[tokio::test]
    async fn every_version_names_the_cluster_and_this_broker_as_controller() {
        let t = testing::broker_with(BrokerConfig {
            node_id: 5,
            advertised_host: "broker.local".into(),
            advertised_port: 29092,
            ..BrokerConfig::default()
        });
        let cluster_id = t.broker.metadata().cluster_id();
        for version in testing::versions(ApiKey::DescribeCluster) {
            let resp = call(&t.broker, version, DescribeClusterRequest::default()).await;
            assert_eq!(resp.error_code, 0, "v{version}");
            assert_eq!(resp.cluster_id.as_str(), cluster_id);
            assert_eq!(resp.controller_id, BrokerId(5));
            assert_eq!(resp.cluster_authorized_operations, i32::MIN);
            let brokers: Vec<(i32, &str, i32)> = resp
                .brokers
                .iter()
                .map(|b| (b.broker_id.0, b.host.as_str(), b.port))
                .collect();
            assert_eq!(brokers, [(5, "broker.local", 29092)]);
            if version >= 1 {
                assert_eq!(resp.endpoint_type, 1);
            }
        }
    }

    /// Operations on the cluster resource, as Kafka's bit field (bit n =
    /// ACL operation n): CREATE 5, ALTER 7, DESCRIBE 8, CLUSTER_ACTION 9,
    /// DESCRIBE_CONFIGS 10, ALTER_CONFIGS 11, IDEMPOTENT_WRITE 12: all of
    /// them without an authorizer.
    const CLUSTER_OPERATIONS_ALL: i32 =
        1 << 5 | 1 << 7 | 1 << 8 | 1 << 9 | 1 << 10 | 1 << 11 | 1 << 12;

    #[tokio::test]
    async fn authorized_operations_are_listed_only_when_asked() {
        let t = testing::broker();
        let req =
            DescribeClusterRequest::default().with_include_cluster_authorized_operations(true);
        let resp = call(&t.broker, 2, req).await;
        assert_eq!(resp.cluster_authorized_operations, CLUSTER_OPERATIONS_ALL);
    }

    #[tokio::test]
    async fn controller_endpoints_are_unsupported_on_the_broker_listener() {
        let t = testing::broker();
        let req = DescribeClusterRequest::default().with_endpoint_type(2);
        let resp = call(&t.broker, 1, req).await;
        assert_eq!(
            resp.error_code,
            ResponseError::UnsupportedEndpointType.code()
        );
        assert!(resp.brokers.is_empty());
    }
}
