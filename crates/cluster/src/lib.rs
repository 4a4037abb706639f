//! weir-cluster: the metadata quorum, as Kafka's KRaft is one.
//!
//! The cluster's metadata (brokers, topics and their IDs, partition
//! assignments, leaders, leader epochs, ISRs, configs, producer-id blocks)
//! is a state machine ([`state`]) replicated by **openraft** over the
//! controller listener ([`network`]). Its log and snapshots are durable
//! ([`log_store`], [`state_machine`]). A [`Controller`] is one node's part
//! of the quorum; [`RaftMetadataStore`] puts it behind the broker's
//! `MetadataStore` trait, so the broker reads metadata from its own applied
//! copy and every change goes through the quorum's leader.
//!
//! Lower layers only: this crate knows metadata and Raft, nothing of
//! partitions' data or of the Kafka protocol.

use std::collections::BTreeMap;
use std::io::Cursor;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::{BasicNode, Config, SnapshotPolicy, StorageError, StorageIOError};
use tokio::sync::watch;

mod controller;
mod directory;
mod log_store;
mod network;
pub mod state;
mod state_machine;
mod store;
mod voters;

pub use controller::{Heartbeat, HeartbeatAnswer, LeaderRebalance};
pub use state::{ClusterState, Command, Outcome, Placement, Refusal};
pub use store::RaftMetadataStore;
pub use voters::VoterRefusal;

openraft::declare_raft_types!(
    /// The Raft types of the metadata quorum.
    pub TypeConfig:
        D = Command,
        R = Outcome,
        NodeId = u64,
        Node = BasicNode,
        SnapshotData = Cursor<Vec<u8>>,
);

/// A node of the metadata quorum, as openraft runs it.
pub(crate) type Raft = openraft::Raft<TypeConfig>;

/// Largest serialized command, and so Raft entry (with its framing): a
/// topic of 100,000 partitions with three replicas each fits.
pub(crate) const ENTRY_BYTES_MAX: usize = 4 << 20;
/// Most entries in one AppendEntries; with [`ENTRY_BYTES_MAX`] it bounds
/// the controller listener's request size.
pub(crate) const MAX_PAYLOAD_ENTRIES: u64 = 16;
/// Pause between attempts while the quorum has no leader.
const NO_LEADER_BACKOFF: Duration = Duration::from_millis(100);
/// Longest wait for another voter's greeting.
const GREETING_TIMEOUT: Duration = Duration::from_secs(1);
/// How often a node entering the quorum says in the log what it waits for.
const WAITING_LOG_EVERY: Duration = Duration::from_secs(5);

/// Why the quorum could not start or a write failed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// A setting cannot be used.
    #[error("{0}")]
    Config(String),
    /// The Raft log, vote or snapshot could not be read or written.
    #[error("metadata quorum storage: {0}")]
    Storage(String),
    /// openraft stopped or refused.
    #[error("metadata quorum: {0}")]
    Raft(String),
    /// No leader could be reached, or the change was not committed, before
    /// the deadline. A change that timed out may still commit later.
    #[error("no metadata quorum leader committed the change within {0:?}")]
    NoLeader(Duration),
    /// The controller listener failed.
    #[error("controller listener: {0}")]
    Listener(#[source] std::io::Error),
    /// The quorum's leader refused the request, and says why.
    #[error("the metadata quorum refused: {0}")]
    Refused(String),
    /// The quorum's leader refused a voter change.
    #[error("{0}")]
    VoterChange(#[source] VoterRefusal),
}

impl From<weir_sync::PoisonedLock> for ClusterError {
    fn from(e: weir_sync::PoisonedLock) -> Self {
        Self::Storage(e.to_string())
    }
}

/// A storage failure, as openraft takes it (it stops the node).
pub(crate) fn storage_io(why: impl std::fmt::Display) -> StorageError<u64> {
    StorageIOError::write(openraft::AnyError::error(why.to_string())).into()
}

/// One node's settings for the quorum.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// `--node-id`.
    pub node_id: u64,
    /// `--voters`: each voter's id and controller address (`HOST:PORT`).
    pub voters: BTreeMap<u64, String>,
    /// A node whose id is not one of `--voters`: a learner of the quorum
    /// (an observer), which copies the metadata and does not vote. The
    /// address is its controller listener, where the leader sends it the
    /// log.
    pub learner: Option<String>,
    /// The node has the controller role (`--process-roles` names
    /// `controller`): a voter, or an observer that `add-controller` can
    /// make one. A broker-only node never votes.
    pub controller_role: bool,
    /// Where the Raft log, vote and snapshot live (`<data dir>/raft`).
    pub dir: PathBuf,
    /// Raft heartbeat interval.
    pub heartbeat: Duration,
    /// Raft's election timeout: a follower that has heard no leader for
    /// its leader lease (twice this, openraft's `election_timeout_max`)
    /// plus a random time between this and twice this starts an election,
    /// so 3 to 4 times this after the leader's last heartbeat.
    pub election_timeout: Duration,
    /// How long a metadata write waits for a quorum leader before it fails.
    pub write_timeout: Duration,
    /// A snapshot is taken every this many log entries, and the log before
    /// it purged (keeping 1,000 for followers that lag).
    pub snapshot_every: u64,
    /// `broker.session.timeout.ms`: a broker that has not heartbeated for
    /// this long is fenced.
    pub broker_session_timeout: Duration,
    /// `broker.heartbeat.interval.ms`: a broker two heartbeats late has its
    /// listener probed, and is fenced at once if it refuses connections.
    pub broker_heartbeat_interval: Duration,
    /// `auto.leader.rebalance.enable` and its check.
    pub leader_rebalance: LeaderRebalance,
}

impl ControllerConfig {
    /// Settings with Weir's default timings: heartbeats every 100 ms, an
    /// election 0.6 to 0.8 s after the last one (KRaft's
    /// `controller.quorum.election.timeout.ms` is 1 s, after which it starts
    /// a pre-vote; shorter here so a failover that also loses the quorum's
    /// leader stays under 3 s), and brokers fenced after 1.5 s without a
    /// heartbeat, or at once when they miss two and their listener refuses
    /// connections.
    pub fn new(node_id: u64, voters: BTreeMap<u64, String>, dir: PathBuf) -> Self {
        Self {
            node_id,
            voters,
            learner: None,
            controller_role: true,
            dir,
            heartbeat: Duration::from_millis(100),
            election_timeout: Duration::from_millis(200),
            write_timeout: Duration::from_secs(15),
            snapshot_every: 5000,
            broker_session_timeout: Duration::from_millis(1500),
            broker_heartbeat_interval: Duration::from_millis(250),
            // Kafka's defaults.
            leader_rebalance: LeaderRebalance {
                enabled: true,
                interval: Duration::from_secs(300),
                per_broker_percentage: 10,
            },
        }
    }
}

/// Parse `--voters` (`ID@HOST:PORT,...`, KRaft's
/// `controller.quorum.voters`).
pub fn parse_voters(text: &str) -> Result<BTreeMap<u64, String>, ClusterError> {
    let mut voters = BTreeMap::new();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let bad = |why: &str| ClusterError::Config(format!("--voters entry '{item}': {why}"));
        let (id, addr) = item
            .split_once('@')
            .ok_or_else(|| bad("expected ID@HOST:PORT"))?;
        let id: u64 = id.parse().map_err(|_| bad("the id is not a number"))?;
        let (host, port) = addr
            .rsplit_once(':')
            .ok_or_else(|| bad("expected HOST:PORT after '@'"))?;
        if host.is_empty() || port.parse::<u16>().is_err() {
            return Err(bad("expected HOST:PORT after '@'"));
        }
        if voters.insert(id, addr.to_string()).is_some() {
            return Err(bad("the id is given twice"));
        }
    }
    if voters.is_empty() {
        return Err(ClusterError::Config("--voters names no voter".into()));
    }
    Ok(voters)
}

/// One node's part of the metadata quorum: its Raft, its applied metadata,
/// and its controller listener.
pub struct Controller {
    id: u64,
    voters: BTreeMap<u64, String>,
    /// A learner's own controller address (see [`ControllerConfig::learner`]).
    learner: Option<String>,
    /// See [`ControllerConfig::controller_role`].
    controller_role: bool,
    /// This node's metadata directory ([`directory`]).
    directory: uuid::Uuid,
    /// How this node entered the quorum, once it has (see [`voters`]).
    entered: watch::Receiver<Option<voters::Admission>>,
    write_timeout: Duration,
    raft: Raft,
    node: Arc<controller::Node>,
    machine: state_machine::StateMachine,
    client: network::Client,
    server: tokio::task::JoinHandle<()>,
    /// The task that fences brokers whose sessions expire.
    sessions: tokio::task::JoinHandle<()>,
    /// The task that moves leaderships back to preferred replicas.
    rebalance: tokio::task::JoinHandle<()>,
    local_addr: SocketAddr,
}

impl std::fmt::Debug for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller")
            .field("id", &self.id)
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl Controller {
    /// Open the node's Raft storage, serve the controller listener on
    /// `listener`, and enter the quorum. A voter whose Raft folder is empty
    /// answers no Raft request until it has entered as [`voters`] tells:
    /// it initializes a new quorum with the voters (every voter may, with
    /// the same voters, and Raft keeps one), or is admitted by the existing
    /// quorum's leader, as the voter it is or as an observer, or is refused
    /// ([`Controller::join`] says so). A learner never initializes: it asks
    /// the leader to add it ([`Controller::join`]) and takes the log and
    /// membership from it.
    pub async fn start(
        config: ControllerConfig,
        listener: tokio::net::TcpListener,
    ) -> Result<Arc<Self>, ClusterError> {
        let voter = config.voters.contains_key(&config.node_id);
        match (&config.learner, voter) {
            (None, false) => {
                return Err(ClusterError::Config(format!(
                    "--node-id {} is not one of --voters",
                    config.node_id
                )));
            }
            (Some(_), true) => {
                return Err(ClusterError::Config(format!(
                    "--node-id {} is one of --voters; an observer needs another id",
                    config.node_id
                )));
            }
            _ => {}
        }
        let timeout_ms = u64::try_from(config.election_timeout.as_millis()).unwrap_or(u64::MAX);
        let raft_config = Config {
            cluster_name: "weir".into(),
            heartbeat_interval: u64::try_from(config.heartbeat.as_millis()).unwrap_or(100),
            election_timeout_min: timeout_ms,
            election_timeout_max: timeout_ms.saturating_mul(2),
            max_payload_entries: MAX_PAYLOAD_ENTRIES,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_every),
            max_in_snapshot_log_to_keep: config.snapshot_every.min(1000),
            ..Config::default()
        }
        .validate()
        .map_err(|e| ClusterError::Config(e.to_string()))?;
        let log = log_store::LogStore::open(&config.dir)?;
        let directory = directory::load_or_create(&config.dir)?;
        let machine = state_machine::StateMachine::open(&config.dir)?;
        let client = network::Client::new().map_err(|e| ClusterError::Raft(e.to_string()))?;
        let raft = Raft::new(
            config.node_id,
            Arc::new(raft_config),
            network::Network {
                client: client.clone(),
            },
            log,
            machine.clone(),
        )
        .await
        .map_err(|e| ClusterError::Raft(e.to_string()))?;
        let local_addr = listener.local_addr().map_err(ClusterError::Listener)?;
        let node = Arc::new(controller::Node::new(
            config.node_id,
            raft.clone(),
            machine.clone(),
            config.broker_session_timeout,
            config.broker_heartbeat_interval,
        ));
        let sessions = tokio::spawn(controller::watch_sessions(
            Arc::downgrade(&node),
            (config.broker_session_timeout / 8)
                .min(config.broker_heartbeat_interval / 2)
                .max(Duration::from_millis(10)),
        ));
        let rebalance = tokio::spawn(controller::rebalance_leaders(
            Arc::downgrade(&node),
            config.leader_rebalance,
        ));
        let app = network::router(node.clone());
        let server = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "the controller listener stopped");
            }
        });
        let initialized = raft
            .is_initialized()
            .await
            .map_err(|e| ClusterError::Raft(e.to_string()))?;
        // A node whose folder holds its log and vote answers Raft at once.
        // With an empty folder, a voter of --voters enters first (`enter`),
        // and an observer once the leader has added it (`join`): one that
        // `add-controller` made a voter before it lost its folder must not
        // answer as that voter.
        let must_enter = !initialized && config.learner.is_none();
        let (entered_tx, entered) =
            watch::channel((!must_enter).then_some(voters::Admission::Voter));
        node.admit_raft(initialized);
        let controller = Arc::new(Self {
            id: config.node_id,
            voters: config.voters,
            learner: config.learner,
            controller_role: config.controller_role,
            directory,
            entered,
            write_timeout: config.write_timeout,
            raft,
            node,
            machine,
            client,
            server,
            sessions,
            rebalance,
            local_addr,
        });
        tokio::spawn(name_the_cluster(Arc::downgrade(&controller)));
        tokio::spawn(log_leader_changes(controller.raft.metrics(), controller.id));
        if must_enter {
            tokio::spawn(enter(Arc::downgrade(&controller), entered_tx));
        } else if controller.learner.is_none() {
            tokio::spawn(bind_directory(Arc::downgrade(&controller)));
        }
        Ok(controller)
    }

    /// This node's id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The controller listener's address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The quorum leader this node knows of.
    pub fn leader(&self) -> Option<u64> {
        self.raft.metrics().borrow().current_leader
    }

    /// openraft's view of this node: its term, role, log and, on a leader,
    /// each follower's replication progress.
    pub fn metrics(&self) -> openraft::RaftMetrics<u64, BasicNode> {
        self.raft.metrics().borrow().clone()
    }

    /// Read the metadata this node has applied.
    pub fn read<T>(&self, f: impl FnOnce(&ClusterState) -> T) -> Result<T, ClusterError> {
        self.machine.read(f)
    }

    /// The change feed: the index of the last applied entry.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.machine.changes()
    }

    /// Commit `command` through the quorum's leader (this node or another,
    /// found by asking), retrying while the quorum has no leader, for at
    /// most the write timeout, and wait until this node has applied it too, so what it
    /// reads next includes the change.
    ///
    /// A forwarded write whose answer is lost may have been applied; the
    /// retry then meets its effect (a second create is refused as existing),
    /// as a Kafka client retrying a request may.
    pub async fn write(&self, command: Command) -> Result<Outcome, ClusterError> {
        let (outcome, index) = self.write_at(command).await?;
        self.wait_applied(index, self.write_timeout).await?;
        Ok(outcome)
    }

    async fn write_at(&self, command: Command) -> Result<(Outcome, u64), ClusterError> {
        self.ask_leader("/controller/write", &command, |node| {
            let command = command.clone();
            async move { node.local_write(command).await }
        })
        .await
    }

    /// Wait until this node has applied every change committed before the
    /// call (a linearizable read point: Raft's read index, asked of the
    /// leader), so what it reads next is as fresh as the leader's.
    pub async fn catch_up(&self) -> Result<(), ClusterError> {
        let index = self
            .ask_leader("/controller/read_index", &(), |node| async move {
                node.local_read_index().await
            })
            .await?;
        self.wait_applied(index, self.write_timeout).await
    }

    /// Register a broker (fenced until it heartbeats as caught up); returns
    /// its broker epoch.
    pub async fn register_broker(
        &self,
        id: i32,
        host: String,
        port: i32,
        rack: Option<String>,
        endpoints: Vec<weir_metadata::Endpoint>,
    ) -> Result<i64, ClusterError> {
        match self
            .write(Command::RegisterBroker {
                id,
                host,
                port,
                rack,
                endpoints,
            })
            .await?
        {
            Outcome::BrokerEpoch { epoch } => Ok(epoch),
            other => Err(ClusterError::Raft(format!(
                "unexpected answer to a registration: {other:?}"
            ))),
        }
    }

    /// Send a broker's heartbeat to the leader.
    pub async fn heartbeat(&self, beat: Heartbeat) -> Result<HeartbeatAnswer, ClusterError> {
        self.ask_leader("/controller/heartbeat", &beat, |node| {
            let beat = beat.clone();
            async move { node.local_heartbeat(beat).await }
        })
        .await
    }

    /// Enter the quorum: wait (at most the write timeout) until this node
    /// has entered it ([`Controller::start`]), and, for a learner, ask the
    /// quorum's leader, through any voter, to add it as a learner at its
    /// controller address (or update the address it knows). Idempotent; a
    /// voter has nothing more to do. Fails with [`ClusterError::Refused`]
    /// when the leader refuses (a learner with a voter's id, a voter whose
    /// Raft folder was lost), and [`ClusterError::NoLeader`] when no leader
    /// answered in time: call it again.
    pub async fn join(&self) -> Result<(), ClusterError> {
        let mut entered = self.entered.clone();
        let admission = tokio::time::timeout(self.write_timeout, entered.wait_for(Option::is_some))
            .await
            .map_err(|_| ClusterError::NoLeader(self.write_timeout))?
            .map_err(|e| ClusterError::Raft(e.to_string()))?
            .clone();
        let addr = match (admission, &self.learner) {
            (Some(voters::Admission::Refused(why)), _) => return Err(ClusterError::Refused(why)),
            (_, Some(addr)) => addr.clone(),
            (Some(voters::Admission::Observer), None) => {
                self.voters.get(&self.id).cloned().ok_or_else(|| {
                    ClusterError::Config(format!("--node-id {} is not one of --voters", self.id))
                })?
            }
            _ => return Ok(()),
        };
        let join = controller::Join {
            id: self.id,
            addr,
            directory: self.controller_role.then_some(self.directory),
        };
        let answer = self
            .ask_leader("/controller/join", &join, |node| {
                let join = join.clone();
                async move { node.local_join(join).await }
            })
            .await?;
        answer.map_err(ClusterError::Refused)?;
        self.node.admit_raft(true);
        Ok(())
    }

    /// Unregister broker `id` (Kafka's UnregisterBroker) through the
    /// quorum's leader, removing it from the quorum too if it is a
    /// learner, and wait until this node has applied the change. A refusal
    /// is the outcome [`Outcome::Refused`].
    pub async fn unregister_broker(&self, id: i32) -> Result<Outcome, ClusterError> {
        let (outcome, index) = self
            .ask_leader("/controller/unregister", &id, |node| async move {
                node.local_unregister(id).await
            })
            .await?;
        self.wait_applied(index, self.write_timeout).await?;
        Ok(outcome)
    }

    /// Initialize a new quorum with `--voters` (openraft refuses, and
    /// that is fine, when this node's Raft already holds a log or a vote).
    async fn initialize(&self) -> Result<(), ClusterError> {
        let members: BTreeMap<u64, BasicNode> = self
            .voters
            .iter()
            .map(|(id, addr)| (*id, BasicNode { addr: addr.clone() }))
            .collect();
        match self.raft.initialize(members).await {
            Ok(()) => {
                tracing::info!(voters = ?self.voters, "initialized the metadata quorum");
                Ok(())
            }
            Err(openraft::error::RaftError::APIError(
                openraft::error::InitializeError::NotAllowed(_),
            )) => Ok(()),
            Err(e) => Err(ClusterError::Raft(e.to_string())),
        }
    }

    /// Make observer `id` a voter (KRaft's AddRaftVoter), once it has
    /// caught up with the metadata log, through the quorum's leader. With
    /// `directory`, only if that is the observer's directory.
    pub async fn add_voter(
        &self,
        id: u64,
        directory: Option<uuid::Uuid>,
    ) -> Result<(), ClusterError> {
        self.change_voter(true, voters::VoterChange { id, directory })
            .await
    }

    /// Make voter `id` an observer (KRaft's RemoveRaftVoter) through the
    /// quorum's leader. With `directory`, only if that is the voter's
    /// directory.
    pub async fn remove_voter(
        &self,
        id: u64,
        directory: Option<uuid::Uuid>,
    ) -> Result<(), ClusterError> {
        self.change_voter(false, voters::VoterChange { id, directory })
            .await
    }

    /// Add (`add`) or remove a voter through the quorum's leader, and wait
    /// until this node has applied the new membership.
    async fn change_voter(
        &self,
        add: bool,
        change: voters::VoterChange,
    ) -> Result<(), ClusterError> {
        let path = if add {
            "/controller/add_voter"
        } else {
            "/controller/remove_voter"
        };
        let index = self
            .ask_leader(path, &change, |node| {
                let change = change.clone();
                async move {
                    if add {
                        node.local_add_voter(change).await
                    } else {
                        node.local_remove_voter(change).await
                    }
                }
            })
            .await?
            .map_err(ClusterError::VoterChange)?;
        self.wait_applied(index, self.write_timeout).await
    }

    /// The quorum as its leader describes it (DescribeQuorum), asked of the
    /// leader wherever it is.
    pub async fn describe_quorum(&self) -> Result<weir_metadata::QuorumInfo, ClusterError> {
        self.ask_leader("/controller/quorum", &(), |node| async move {
            node.local_quorum()
        })
        .await
    }

    /// Ask the quorum's leader (this node, or another found by asking),
    /// retrying while there is none, until the write timeout.
    async fn ask_leader<Req, T, F, Fut>(
        &self,
        path: &str,
        req: &Req,
        local: F,
    ) -> Result<T, ClusterError>
    where
        Req: serde::Serialize,
        T: serde::de::DeserializeOwned,
        F: Fn(Arc<controller::Node>) -> Fut,
        Fut: std::future::Future<Output = controller::LeaderReply<T>>,
    {
        use controller::LeaderReply;
        let deadline = Instant::now() + self.write_timeout;
        let mut tried = 0usize;
        let mut target = self.leader().unwrap_or_else(|| self.guess_leader(tried));
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let attempt = async {
                if target == self.id {
                    local(self.node.clone()).await
                } else if let Some(addr) = self.address_of(target) {
                    match self.client.call(&addr, path, req, remaining).await {
                        Ok(reply) => reply,
                        Err(e) => {
                            tracing::debug!(error = %e, path, "asking the quorum leader failed");
                            LeaderReply::NotLeader { leader: None }
                        }
                    }
                } else {
                    LeaderReply::NotLeader { leader: None }
                }
            };
            // A leader cut off from its quorum never commits: the attempt
            // ends at the deadline, whatever it waits on.
            let reply = tokio::time::timeout(remaining, attempt)
                .await
                .unwrap_or(LeaderReply::NotLeader { leader: None });
            match reply {
                LeaderReply::Done(answer) => return Ok(answer),
                LeaderReply::NotLeader {
                    leader: Some(leader),
                } if leader != target => target = leader,
                LeaderReply::Failed(why) if target == self.id => {
                    return Err(ClusterError::Raft(why));
                }
                _ => {
                    if Instant::now() >= deadline {
                        return Err(ClusterError::NoLeader(self.write_timeout));
                    }
                    tokio::time::sleep(NO_LEADER_BACKOFF).await;
                    tried = tried.wrapping_add(1);
                    target = self.leader().unwrap_or_else(|| self.guess_leader(tried));
                }
            }
        }
    }

    /// Wait until this node has applied the log up to `index`.
    pub async fn wait_applied(&self, index: u64, timeout: Duration) -> Result<(), ClusterError> {
        let mut changes = self.changes();
        tokio::time::timeout(timeout, changes.wait_for(|applied| *applied >= index))
            .await
            .map_err(|_| ClusterError::NoLeader(timeout))?
            .map(|_| ())
            .map_err(|e| ClusterError::Raft(e.to_string()))
    }

    /// Stop this node's Raft, its controller listener and its session
    /// watch (a stopped Raft may still report itself leader).
    pub async fn shutdown(&self) {
        self.sessions.abort();
        self.rebalance.abort();
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "the metadata quorum node did not stop cleanly");
        }
        self.server.abort();
    }

    /// Whom to ask when no leader is known: a voter asks itself (it may be
    /// elected, and it learns the leader when one is); any other node
    /// (a learner, which is never elected, or a node still entering the
    /// quorum) asks each other voter of `--voters` in turn, and a voter
    /// that knows the leader names it.
    fn guess_leader(&self, tried: usize) -> u64 {
        let votes = self.node.is_voter(self.id);
        let others: Vec<u64> = self
            .voters
            .keys()
            .copied()
            .filter(|v| *v != self.id)
            .collect();
        if votes || others.is_empty() {
            return self.id;
        }
        others[tried % others.len()]
    }

    fn address_of(&self, id: u64) -> Option<String> {
        let metrics = self.raft.metrics();
        let from_membership = metrics
            .borrow()
            .membership_config
            .membership()
            .get_node(&id)
            .map(|n| n.addr.clone());
        from_membership.or_else(|| self.voters.get(&id).cloned())
    }
}

/// Say in the log when the quorum's leader changes, as seen from this
/// node; ends when the Raft stops.
async fn log_leader_changes(
    mut metrics: watch::Receiver<openraft::RaftMetrics<u64, BasicNode>>,
    me: u64,
) {
    let mut known: Option<(Option<u64>, u64)> = None;
    loop {
        let now = {
            let m = metrics.borrow_and_update();
            (m.current_leader, m.current_term)
        };
        if known != Some(now) {
            match now {
                // A node restarted after leading resumes its stored vote
                // (openraft does) until the others tell it of a newer term.
                (Some(leader), term) if leader == me && known.is_none() => tracing::info!(
                    term,
                    "this node led the metadata quorum in this term when it stopped; it \
                     leads again only if a majority still follows it, and otherwise steps \
                     down as soon as it hears of the newer term"
                ),
                (Some(leader), term) if leader == me => {
                    tracing::info!(term, "this node now leads the metadata quorum")
                }
                (Some(leader), term) => {
                    tracing::info!(leader, term, "the metadata quorum has a leader")
                }
                (None, term) => tracing::warn!(
                    term,
                    "the metadata quorum has no leader (an election, or this node cannot reach \
                     a majority of --voters)"
                ),
            }
            known = Some(now);
        }
        if metrics.changed().await.is_err() {
            return;
        }
    }
}

/// Enter the quorum with an empty Raft folder (see [`voters`]): greet the
/// other voters until they tell whether the quorum exists, then initialize
/// it or be admitted by its leader, and only then answer Raft. Says in
/// `entered` how it went; ends when the controller is dropped.
async fn enter(
    controller: std::sync::Weak<Controller>,
    entered: watch::Sender<Option<voters::Admission>>,
) {
    let mut last_said = Instant::now();
    loop {
        let Some(c) = controller.upgrade() else {
            return;
        };
        let others: Vec<(u64, String)> = c
            .voters
            .iter()
            .filter(|(id, _)| **id != c.id)
            .map(|(id, addr)| (*id, addr.clone()))
            .collect();
        let mut calls = tokio::task::JoinSet::new();
        for (i, (_, addr)) in others.iter().enumerate() {
            let (client, addr) = (c.client.clone(), addr.clone());
            calls.spawn(async move {
                let path = "/controller/hello";
                let answer = client.call(&addr, path, &(), GREETING_TIMEOUT).await;
                (i, answer.ok())
            });
        }
        let mut greetings: Vec<Option<voters::HelloAnswer>> = vec![None; others.len()];
        while let Some(joined) = calls.join_next().await {
            if let Ok((i, answer)) = joined
                && let Some(slot) = greetings.get_mut(i)
            {
                *slot = answer;
            }
        }
        let admission = match voters::entry(c.voters.len(), &greetings) {
            voters::Entry::Initialize => c.initialize().await.map(|()| voters::Admission::Voter),
            voters::Entry::AskLeader => {
                let admit = voters::Admit {
                    id: c.id,
                    directory: c.directory,
                };
                c.ask_leader("/controller/admit", &admit, |node| {
                    let admit = admit.clone();
                    async move { node.local_admit(admit).await }
                })
                .await
            }
            voters::Entry::Wait => Err(ClusterError::NoLeader(GREETING_TIMEOUT)),
        };
        match admission {
            Ok(admission) => {
                match &admission {
                    voters::Admission::Voter => {
                        tracing::info!("entered the metadata quorum as a voter")
                    }
                    voters::Admission::Observer => tracing::info!(
                        "this node is not a voter of the existing metadata quorum: it joins as \
                         an observer; `weir cluster add-controller --controller-id {}` makes it \
                         a voter",
                        c.id
                    ),
                    voters::Admission::Refused(why) => {
                        tracing::error!("the metadata quorum refused this node: {why}")
                    }
                }
                let voter = admission == voters::Admission::Voter;
                c.node
                    .admit_raft(!matches!(admission, voters::Admission::Refused(_)));
                entered.send_replace(Some(admission));
                if voter {
                    bind_directory(Arc::downgrade(&c)).await;
                }
                return;
            }
            Err(e) if last_said.elapsed() >= WAITING_LOG_EVERY => {
                let answered = greetings.iter().flatten().count();
                tracing::warn!(error = %e, answered, others = others.len(),
                    "this node's Raft folder is new; waiting for a majority of --voters to answer \
                     on their controller listeners (a new quorum), or for the existing quorum's \
                     leader to admit it");
                last_said = Instant::now();
            }
            Err(_) => {}
        }
        drop(c);
        tokio::time::sleep(NO_LEADER_BACKOFF).await;
    }
}

/// Make sure the quorum's leader has bound this voter to its directory,
/// retrying while there is no leader; ends when the controller is dropped.
async fn bind_directory(controller: std::sync::Weak<Controller>) {
    loop {
        let Some(c) = controller.upgrade() else {
            return;
        };
        let admit = voters::Admit {
            id: c.id,
            directory: c.directory,
        };
        let answer = c
            .ask_leader("/controller/admit", &admit, |node| {
                let admit = admit.clone();
                async move { node.local_admit(admit).await }
            })
            .await;
        match answer {
            Ok(voters::Admission::Refused(why)) => {
                tracing::error!(
                    "this voter's Raft folder holds a log, but the quorum knows it with \
                     another directory: {why}"
                );
                return;
            }
            Ok(_) => return,
            Err(_) => {
                drop(c);
                tokio::time::sleep(NO_LEADER_BACKOFF).await;
            }
        }
    }
}

/// The first leader names the cluster (KRaft has `kafka-storage format`
/// write a cluster id; here the quorum picks one once).
async fn name_the_cluster(controller: std::sync::Weak<Controller>) {
    let Some(mut metrics) = controller.upgrade().map(|c| c.raft.metrics()) else {
        return;
    };
    loop {
        let Some(c) = controller.upgrade() else {
            return;
        };
        let named = c.read(|s| !s.cluster_id.is_empty()).unwrap_or(true);
        if named {
            return;
        }
        if c.leader() == Some(c.id) {
            let id = weir_metadata::new_cluster_id();
            match c.write(Command::SetClusterId { id }).await {
                Ok(_) => return,
                Err(e) => tracing::debug!(error = %e, "naming the cluster failed; will retry"),
            }
        }
        drop(c);
        if metrics.changed().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn voters_parse_as_kraft_writes_them_and_mistakes_are_named() {
        let voters = parse_voters("1@127.0.0.1:9093,2@n2.example:9193, 3@[::1]:9293");
        let voters = voters.unwrap_or_default();
        assert_eq!(voters.len(), 3);
        assert_eq!(voters[&2], "n2.example:9193");
        assert_eq!(voters[&3], "[::1]:9293");
        for bad in [
            "",
            "1@h:1,1@h:2",
            "x@h:1",
            "1h:1",
            "1@h",
            "1@:9093",
            "1@h:99999",
        ] {
            assert!(
                matches!(parse_voters(bad), Err(ClusterError::Config(_))),
                "{bad:?} parsed"
            );
        }
    }
}
