//! The brokers of the cluster and its metadata quorum, as this node knows
//! them (what `weir cluster describe` and Kafka's DescribeCluster and
//! DescribeQuorum show):
//!
//! | route | answer |
//! |-------|--------|
//! | `GET /v1/brokers` | [`BrokersView`]: each broker's id, host, port, rack, listeners, whether it is this node and (on a cluster) whether it is fenced; on a cluster the quorum's leader, term and voters |
//!
//! A single node lists only itself, with no quorum. The list is this
//! node's copy of the metadata, which follows the quorum's.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use crate::{AdminError, AdminState};

/// The routes of this module.
pub(crate) fn routes() -> Router<AdminState> {
    Router::new().route("/v1/brokers", get(list))
}

/// The answer of `GET /v1/brokers`.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct BrokersView {
    /// The cluster id (Kafka's `cluster.id`).
    pub cluster_id: String,
    /// This node's id (`--node-id`).
    pub node_id: i32,
    /// Whether this node is part of a cluster (a metadata quorum), not a
    /// single node.
    pub cluster: bool,
    /// Every broker known, by id.
    pub brokers: Vec<BrokerSummary>,
    /// The metadata quorum; `None` on a single node, or while this node
    /// knows of none.
    pub quorum: Option<QuorumSummary>,
}

/// One broker.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct BrokerSummary {
    /// Its node id.
    pub node_id: i32,
    /// The host other brokers reach it at (its inter-broker listener's
    /// advertised host).
    pub host: String,
    /// The port other brokers reach it at.
    pub port: i32,
    /// `broker.rack`, when set.
    pub rack: Option<String>,
    /// Whether it is the node answering.
    pub this_node: bool,
    /// `active` (registered and unfenced), `fenced` (its session expired
    /// or it has not caught up: it leads nothing), or `unregistered` (this
    /// node, before its registration is in the metadata). Always `active`
    /// on a single node.
    pub state: &'static str,
    /// Its advertised listeners.
    pub listeners: Vec<ListenerSummary>,
}

/// One advertised listener of a broker.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ListenerSummary {
    /// Its name (`PLAINTEXT`, `SSL`, ...).
    pub name: String,
    /// The host clients are told.
    pub host: String,
    /// The port clients are told.
    pub port: i32,
    /// Its security protocol, when known.
    pub security_protocol: Option<String>,
}

/// The metadata quorum (KRaft's `__cluster_metadata`), as its leader
/// reports it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct QuorumSummary {
    /// The leader's node id, or -1 while there is none.
    pub leader_id: i32,
    /// The leader's epoch: its Raft term.
    pub leader_epoch: i32,
    /// The committed end of the metadata log.
    pub high_watermark: i64,
    /// The voters, the leader among them.
    pub voters: Vec<QuorumMember>,
    /// Nodes that copy the metadata without voting.
    pub observers: Vec<QuorumMember>,
}

/// One replica of the metadata log.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct QuorumMember {
    /// Its node id.
    pub node_id: i32,
    /// The end of its copy of the log (-1 when unknown).
    pub log_end_offset: i64,
    /// When it last fetched from the leader, in ms since the epoch (-1 when
    /// unknown).
    pub last_fetch_timestamp_ms: i64,
    /// When it last held everything the leader had (-1 when unknown).
    pub last_caught_up_timestamp_ms: i64,
}

/// The brokers and the quorum as this node knows them. Reads the metadata
/// store (which may take its lock across a commit's fsync), so off the
/// runtime's workers.
pub(crate) async fn broker_list(state: &AdminState) -> Result<BrokersView, AdminError> {
    let broker = state.broker.clone();
    crate::kafka::blocking(move || brokers_of(&broker)).await
}

fn brokers_of(broker: &weir_broker::Broker) -> BrokersView {
    let config = broker.config();
    let metadata = broker.metadata();
    let node_id = config.node_id;
    let cluster = metadata.replicated();
    let mut brokers: Vec<BrokerSummary> = metadata
        .brokers()
        .into_iter()
        .map(|b| BrokerSummary {
            node_id: b.id,
            this_node: b.id == node_id,
            state: if b.fenced { "fenced" } else { "active" },
            listeners: listeners(&b.endpoints, &b.host, b.port, &config.inter_broker_listener),
            host: b.host,
            port: b.port,
            rack: b.rack,
        })
        .collect();
    if !brokers.iter().any(|b| b.this_node) {
        brokers.push(BrokerSummary {
            node_id,
            host: config.advertised_host.clone(),
            port: config.advertised_port,
            rack: config.rack.clone(),
            this_node: true,
            state: if cluster { "unregistered" } else { "active" },
            listeners: listeners(
                &config.listeners,
                &config.advertised_host,
                config.advertised_port,
                &config.inter_broker_listener,
            ),
        });
    }
    brokers.sort_by_key(|b| b.node_id);
    let member = |r: weir_metadata::QuorumReplica| QuorumMember {
        node_id: r.replica_id,
        log_end_offset: r.log_end_offset,
        last_fetch_timestamp_ms: r.last_fetch_timestamp_ms,
        last_caught_up_timestamp_ms: r.last_caught_up_timestamp_ms,
    };
    let quorum = metadata.quorum().map(|q| QuorumSummary {
        leader_id: q.leader_id,
        leader_epoch: q.leader_epoch,
        high_watermark: q.high_watermark,
        voters: q.voters.into_iter().map(member).collect(),
        observers: q.observers.into_iter().map(member).collect(),
    });
    BrokersView {
        cluster_id: metadata.cluster_id(),
        node_id,
        cluster,
        brokers,
        quorum,
    }
}

/// A broker's listeners; one that names none has one plaintext listener,
/// its inter-broker one, at `host:port`.
fn listeners(
    endpoints: &[weir_metadata::Endpoint],
    host: &str,
    port: i32,
    inter_broker: &str,
) -> Vec<ListenerSummary> {
    if endpoints.is_empty() {
        return vec![ListenerSummary {
            name: inter_broker.to_owned(),
            host: host.to_owned(),
            port,
            security_protocol: None,
        }];
    }
    endpoints
        .iter()
        .map(|e| ListenerSummary {
            name: e.listener.clone(),
            host: e.host.clone(),
            port: e.port,
            security_protocol: Some(e.security_protocol.clone()),
        })
        .collect()
}

async fn list(State(state): State<AdminState>) -> Result<Json<BrokersView>, AdminError> {
    broker_list(&state).await.map(Json)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread")]
    async fn a_single_node_lists_itself_and_no_quorum() {
        let (state, _dir) = crate::tests::state();
        let view = broker_list(&state).await.expect("brokers");
        assert!(!view.cluster);
        assert!(view.quorum.is_none());
        assert_eq!(view.brokers.len(), 1);
        let me = &view.brokers[0];
        assert!(me.this_node);
        assert_eq!((me.node_id, me.state), (view.node_id, "active"));
    }
}
