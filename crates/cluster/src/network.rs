//! The controller listener (`--controller-listen`): Raft's RPCs and the
//! controller's own, as HTTP requests with JSON bodies, served by axum and
//! sent with reqwest.
//!
//! | path                 | body                      | answer                                  |
//! |----------------------|---------------------------|-----------------------------------------|
//! | `POST /raft/append`  | AppendEntriesRequest      | `Result<AppendEntriesResponse, RaftError>` |
//! | `POST /raft/vote`    | VoteRequest               | `Result<VoteResponse, RaftError>`       |
//! | `POST /raft/snapshot`| InstallSnapshotRequest    | `Result<InstallSnapshotResponse, ..>`   |
//! | `POST /controller/write` | a metadata [`Command`](crate::Command) | the outcome and its index, or "not leader" |
//! | `POST /controller/read_index` | nothing             | the leader's read index, or "not leader" |
//! | `POST /controller/heartbeat` | a broker's heartbeat | whether it is fenced, or "not leader" |
//! | `POST /controller/quorum` | nothing                 | the quorum as DescribeQuorum tells it, or "not leader" |
//! | `POST /controller/join` | a broker-only node's id and controller address | done, or why refused, or "not leader" |
//! | `POST /controller/unregister` | a broker id        | the outcome and its index, or "not leader" |
//! | `POST /controller/hello` | nothing                  | whether this node's log holds anything (any node answers) |
//! | `POST /controller/admit` | a node's id and directory id | voter, observer, or why refused; or "not leader" |
//! | `POST /controller/add_voter` | a node id and, maybe, its directory id | the membership's index, or why refused; or "not leader" |
//! | `POST /controller/remove_voter` | the same          | the same                                |
//!
//! A voter whose Raft folder is empty answers the `/raft/` requests with
//! HTTP 503 until it has entered the quorum (`crate::voters`).
//!
//! Every body is bounded, in both directions ([`RPC_BYTES_MAX`]), and at
//! most [`RPC_IN_FLIGHT_MAX`] requests are served at once across all
//! connections, so a stranger on the controller port can pin only so much
//! memory. A snapshot is received in chunks and refused past
//! `SNAPSHOT_BYTES_MAX`.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, RaftNetwork, RaftNetworkFactory};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::TypeConfig;
use crate::controller::{Heartbeat, HeartbeatAnswer, Join, LeaderReply, Node};
use crate::state::{Command, Outcome};
use crate::state_machine::SNAPSHOT_BYTES_MAX;
use crate::voters::{Admission, Admit, HelloAnswer, VoterChange, VoterRefusal};

/// Largest request or response body on the controller listener: openraft
/// sends at most `MAX_PAYLOAD_ENTRIES` entries of at most
/// `ENTRY_BYTES_MAX` each, plus their framing.
pub(crate) const RPC_BYTES_MAX: usize =
    crate::MAX_PAYLOAD_ENTRIES as usize * crate::ENTRY_BYTES_MAX + (1 << 20);
/// Most requests served at once, across every connection.
pub(crate) const RPC_IN_FLIGHT_MAX: usize = 16;

/// The controller listener's routes.
pub(crate) fn router(node: Arc<Node>) -> Router {
    Router::new()
        .route("/raft/append", post(append))
        .route("/raft/vote", post(vote))
        .route("/raft/snapshot", post(snapshot))
        .route("/controller/write", post(write))
        .route("/controller/read_index", post(read_index))
        .route("/controller/heartbeat", post(heartbeat))
        .route("/controller/quorum", post(quorum))
        .route("/controller/join", post(join))
        .route("/controller/unregister", post(unregister))
        .route("/controller/hello", post(hello))
        .route("/controller/admit", post(admit))
        .route("/controller/add_voter", post(add_voter))
        .route("/controller/remove_voter", post(remove_voter))
        .layer(DefaultBodyLimit::max(RPC_BYTES_MAX))
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
            RPC_IN_FLIGHT_MAX,
        ))
        .with_state(node)
}

/// The answer to a Raft request while this node does not answer Raft.
const RAFT_CLOSED: StatusCode = StatusCode::SERVICE_UNAVAILABLE;

async fn append(
    State(node): State<Arc<Node>>,
    Json(req): Json<AppendEntriesRequest<TypeConfig>>,
) -> Result<Json<Result<AppendEntriesResponse<u64>, RaftError<u64>>>, StatusCode> {
    if !node.raft_open() {
        return Err(RAFT_CLOSED);
    }
    let leader = req.vote.leader_id().voted_for();
    let answer = node.raft.append_entries(req).await;
    // Heard from the leader in its own term: a sign of life a successor
    // judges its broker's session by (see `Node::heard_from`).
    if let (Some(leader), Ok(reply)) = (leader, &answer)
        && !matches!(reply, AppendEntriesResponse::HigherVote(_))
    {
        node.heard_from(leader);
    }
    Ok(Json(answer))
}

async fn vote(
    State(node): State<Arc<Node>>,
    Json(req): Json<VoteRequest<u64>>,
) -> Result<Json<Result<VoteResponse<u64>, RaftError<u64>>>, StatusCode> {
    if !node.raft_open() {
        return Err(RAFT_CLOSED);
    }
    Ok(Json(node.raft.vote(req).await))
}

async fn snapshot(
    State(node): State<Arc<Node>>,
    Json(req): Json<InstallSnapshotRequest<TypeConfig>>,
) -> Result<
    Json<Result<InstallSnapshotResponse<u64>, RaftError<u64, InstallSnapshotError>>>,
    StatusCode,
> {
    if !node.raft_open() {
        return Err(RAFT_CLOSED);
    }
    let end = req.offset.saturating_add(req.data.len() as u64);
    if end > SNAPSHOT_BYTES_MAX {
        // Not the snapshot of a metadata state this node can hold: answer as
        // to a mismatched transfer, so the sender starts over rather than
        // this node filling its memory.
        tracing::warn!(bytes = end, "refused a snapshot past SNAPSHOT_BYTES_MAX");
        return Ok(Json(Err(RaftError::APIError(
            InstallSnapshotError::SnapshotMismatch(openraft::error::SnapshotMismatch {
                expect: openraft::SnapshotSegmentId {
                    id: req.meta.snapshot_id.clone(),
                    offset: 0,
                },
                got: openraft::SnapshotSegmentId {
                    id: req.meta.snapshot_id,
                    offset: req.offset,
                },
            }),
        ))));
    }
    Ok(Json(node.raft.install_snapshot(req).await))
}

async fn write(
    State(node): State<Arc<Node>>,
    Json(command): Json<Command>,
) -> Json<LeaderReply<(Outcome, u64)>> {
    Json(node.local_write(command).await)
}

async fn read_index(State(node): State<Arc<Node>>, Json(()): Json<()>) -> Json<LeaderReply<u64>> {
    Json(node.local_read_index().await)
}

async fn quorum(
    State(node): State<Arc<Node>>,
    Json(()): Json<()>,
) -> Json<LeaderReply<weir_metadata::QuorumInfo>> {
    Json(node.local_quorum())
}

async fn join(
    State(node): State<Arc<Node>>,
    Json(join): Json<Join>,
) -> Json<LeaderReply<Result<(), String>>> {
    Json(node.local_join(join).await)
}

async fn unregister(
    State(node): State<Arc<Node>>,
    Json(id): Json<i32>,
) -> Json<LeaderReply<(Outcome, u64)>> {
    Json(node.local_unregister(id).await)
}

async fn hello(State(node): State<Arc<Node>>, Json(()): Json<()>) -> Json<HelloAnswer> {
    Json(node.local_hello())
}

async fn admit(
    State(node): State<Arc<Node>>,
    Json(admit): Json<Admit>,
) -> Json<LeaderReply<Admission>> {
    Json(node.local_admit(admit).await)
}

async fn add_voter(
    State(node): State<Arc<Node>>,
    Json(change): Json<VoterChange>,
) -> Json<LeaderReply<Result<u64, VoterRefusal>>> {
    Json(node.local_add_voter(change).await)
}

async fn remove_voter(
    State(node): State<Arc<Node>>,
    Json(change): Json<VoterChange>,
) -> Json<LeaderReply<Result<u64, VoterRefusal>>> {
    Json(node.local_remove_voter(change).await)
}

async fn heartbeat(
    State(node): State<Arc<Node>>,
    Json(beat): Json<Heartbeat>,
) -> Json<LeaderReply<HeartbeatAnswer>> {
    Json(node.local_heartbeat(beat).await)
}

/// An HTTP client for the controller listeners of other nodes.
#[derive(Clone)]
pub(crate) struct Client {
    http: reqwest::Client,
}

/// Why a call to another node failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CallError {
    /// It could not be reached, or did not answer in time.
    #[error("cannot reach {addr}: {source}")]
    Unreachable {
        addr: String,
        #[source]
        source: reqwest::Error,
    },
    /// It answered something that is not the expected message.
    #[error("bad answer from {addr}: {why}")]
    BadAnswer { addr: String, why: String },
}

impl Client {
    pub(crate) fn new() -> Result<Self, reqwest::Error> {
        Ok(Self {
            http: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(2))
                .build()?,
        })
    }

    /// POST `body` as JSON to `http://addr/path` and read a JSON answer of at
    /// most [`RPC_BYTES_MAX`] bytes.
    pub(crate) async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        addr: &str,
        path: &str,
        body: &Req,
        timeout: Duration,
    ) -> Result<Resp, CallError> {
        let unreachable = |source| CallError::Unreachable {
            addr: addr.to_string(),
            source,
        };
        let mut response = self
            .http
            .post(format!("http://{addr}{path}"))
            .json(body)
            .timeout(timeout)
            .send()
            .await
            .map_err(unreachable)?;
        if !response.status().is_success() {
            return Err(CallError::BadAnswer {
                addr: addr.to_string(),
                why: format!("HTTP status {}", response.status()),
            });
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(unreachable)? {
            if bytes.len() + chunk.len() > RPC_BYTES_MAX {
                return Err(CallError::BadAnswer {
                    addr: addr.to_string(),
                    why: format!("an answer past {RPC_BYTES_MAX} bytes"),
                });
            }
            bytes.extend_from_slice(&chunk);
        }
        serde_json::from_slice(&bytes).map_err(|e| CallError::BadAnswer {
            addr: addr.to_string(),
            why: e.to_string(),
        })
    }
}

/// openraft's network: one [`Peer`] per other node.
#[derive(Clone)]
pub(crate) struct Network {
    pub(crate) client: Client,
}

/// The connection to one other node's controller listener.
pub(crate) struct Peer {
    client: Client,
    target: u64,
    addr: String,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> Peer {
        Peer {
            client: self.client.clone(),
            target,
            addr: node.addr.clone(),
        }
    }
}

impl Peer {
    async fn rpc<
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    >(
        &self,
        path: &str,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<u64, BasicNode, RaftError<u64, E>>> {
        let answer: Result<Resp, RaftError<u64, E>> = self
            .client
            .call(&self.addr, path, req, option.hard_ttl())
            .await
            .map_err(|e| match &e {
                CallError::Unreachable { .. } => RPCError::Unreachable(Unreachable::new(&e)),
                CallError::BadAnswer { .. } => RPCError::Network(NetworkError::new(&e)),
            })?;
        answer.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        self.rpc("/raft/append", &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<u64>,
        RPCError<u64, BasicNode, RaftError<u64, InstallSnapshotError>>,
    > {
        self.rpc("/raft/snapshot", &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        self.rpc("/raft/vote", &rpc, &option).await
    }
}
