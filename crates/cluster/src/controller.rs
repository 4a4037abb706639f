//! What the quorum's leader does beyond Raft: it takes metadata writes,
//! answers read-index requests, and keeps brokers' sessions.
//!
//! Brokers heartbeat to the leader (any node forwards a heartbeat to it).
//! The leader keeps the time of each broker's last heartbeat in memory, as
//! KRaft's controller does; a broker whose session expires
//! (`broker.session.timeout.ms`) is fenced through the log, which moves its
//! leaderships to in-sync followers. A new leader has seen no heartbeat
//! yet. It judges the broker on the node that led it last by when it last
//! heard from that node's Raft (a leader that died is why there is an
//! election, and waiting a whole fresh session for its broker would add
//! the election to every failover of its partitions), and gives every other
//! broker a fresh session. Either way a broker has at least a third of a
//! session, several heartbeats, from the new leader's first moment. A
//! fenced broker that heartbeats saying it has caught up with the metadata
//! is unfenced.
//!
//! A whole session is long to wait for a broker whose process is gone, and
//! that is the common failure (a crash, an OOM kill, SIGKILL). So when a
//! broker has missed two heartbeats, the leader tries to connect to its
//! Kafka listener: a refused connection means its host answers but nothing
//! listens there any more, and the broker is fenced at once. A broker that
//! is alive but slow (paused, swapping, cut off by the network) still
//! accepts a connection or does not answer at all, and keeps its whole
//! session.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use openraft::error::{CheckIsLeaderError, ClientWriteError, RaftError};
use openraft::{BasicNode, ChangeMembers};

use crate::Raft;
use crate::state::{Command, Outcome};

/// A leader's answer, or why this node cannot give it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum LeaderReply<T> {
    /// The leader's answer.
    Done(T),
    /// This node does not lead; the leader it knows, if any.
    NotLeader {
        /// The leader's node id.
        leader: Option<u64>,
    },
    /// The node failed (it is shutting down, its storage failed).
    Failed(String),
}

/// A broker's heartbeat.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Heartbeat {
    /// Its id.
    pub broker: i32,
    /// The epoch of its registration.
    pub epoch: i64,
    /// It has applied the metadata up to the leader's read index and may
    /// lead and join ISRs.
    pub caught_up: bool,
}

/// What the leader answers a heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HeartbeatAnswer {
    /// The broker is fenced: it leads nothing and is in no ISR.
    Fenced,
    /// The broker is unfenced.
    Active,
    /// Its registration is not the current one (it was replaced, or never
    /// committed): it must register again.
    StaleRegistration,
}

/// A broker-only node's request to copy the metadata as a learner of the
/// quorum (`POST /controller/join`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct Join {
    /// Its node id: a broker id, never one of the voters.
    pub(crate) id: u64,
    /// Its controller listener, `HOST:PORT`, where the leader sends the log.
    pub(crate) addr: String,
    /// Its metadata directory, for a node with the controller role (one
    /// `weir cluster add-controller` may make a voter); none for a
    /// broker-only node.
    #[serde(default)]
    pub(crate) directory: Option<uuid::Uuid>,
}

/// Longest controller address a node may join with: a DNS name (253
/// bytes), brackets, a colon and a port.
pub(crate) const JOIN_ADDR_BYTES_MAX: usize = 263;
/// Most learners the quorum keeps: the leader sends the log to each, so a
/// stranger on the controller port cannot make it replicate without end.
pub(crate) const LEARNERS_MAX: usize = 256;

/// The part of a node the controller listener serves.
pub(crate) struct Node {
    pub(crate) id: u64,
    pub(crate) raft: Raft,
    pub(crate) machine: crate::state_machine::StateMachine,
    /// Last heartbeat per broker, kept while this node leads.
    sessions: Mutex<Sessions>,
    session_timeout: Duration,
    /// A broker whose last heartbeat is older than this has its listener
    /// probed (see the module doc).
    heartbeat_late: Duration,
    /// What DescribeQuorum last saw of each voter's progress.
    progress: Mutex<HashMap<u64, Progress>>,
    /// When this node, as a follower, last took entries or a heartbeat from
    /// each leader, by node id.
    heard: Mutex<HashMap<u64, Instant>>,
    /// Whether this node answers Raft's requests: not while a voter with an
    /// empty Raft folder is still entering the quorum (`crate::voters`).
    raft_open: std::sync::atomic::AtomicBool,
}

/// One replica's progress as the leader saw it when last asked.
#[derive(Debug, Default)]
struct Progress {
    matched: u64,
    fetch_ms: i64,
    caught_up_ms: i64,
}

/// Milliseconds since the Unix epoch, as Kafka's timestamps are.
fn wall_clock_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[derive(Default)]
struct Sessions {
    /// The term these sessions were kept in; a new term starts them over.
    term: u64,
    /// When that term's leadership began here.
    since: Option<Instant>,
    last_beat: HashMap<i32, Instant>,
    /// When each late broker's listener was last probed.
    probed: HashMap<i32, Instant>,
}

/// A broker the leader stopped hearing from, and where its clients reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Overdue {
    broker: i32,
    epoch: i64,
    host: String,
    port: i32,
}

/// The brokers [`Node::overdue`] found.
#[derive(Debug, Default)]
struct OverdueBrokers {
    /// Their session expired: fence them.
    expired: Vec<Overdue>,
    /// Two heartbeats late and not probed for as long: probe their listener.
    late: Vec<Overdue>,
}

impl Node {
    pub(crate) fn new(
        id: u64,
        raft: Raft,
        machine: crate::state_machine::StateMachine,
        session_timeout: Duration,
        heartbeat_interval: Duration,
    ) -> Self {
        Self {
            id,
            raft,
            machine,
            sessions: Mutex::new(Sessions::default()),
            session_timeout,
            heartbeat_late: (heartbeat_interval * 2).min(session_timeout / 2),
            progress: Mutex::new(HashMap::new()),
            heard: Mutex::new(HashMap::new()),
            raft_open: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Answer Raft's requests (`open`), or keep refusing them.
    pub(crate) fn admit_raft(&self, open: bool) {
        self.raft_open
            .store(open, std::sync::atomic::Ordering::SeqCst);
    }

    /// The quorum's membership as this node knows it.
    pub(crate) fn membership(&self) -> openraft::Membership<u64, BasicNode> {
        self.raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .clone()
    }

    /// Whether `id` is a voter, as this node knows the membership.
    pub(crate) fn is_voter(&self, id: u64) -> bool {
        self.membership().voter_ids().any(|v| v == id)
    }

    /// Whether this node answers Raft's requests.
    pub(crate) fn raft_open(&self) -> bool {
        self.raft_open.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Note that the leader `node` reached this node just now.
    pub(crate) fn heard_from(&self, node: u64) {
        if let Ok(mut heard) = weir_sync::lock(&self.heard) {
            heard.insert(node, Instant::now());
        }
    }

    /// The other node that led this one last, as a broker, with when this
    /// node last heard from it.
    fn last_leader_heard(&self) -> Option<(i32, Instant)> {
        let heard = weir_sync::lock(&self.heard).ok()?;
        let (node, at) = heard
            .iter()
            .filter(|(node, _)| **node != self.id)
            .max_by_key(|(_, at)| **at)?;
        Some((i32::try_from(*node).ok()?, *at))
    }

    /// The term this node leads in, if it leads.
    pub(crate) fn leading_term(&self) -> Option<u64> {
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        (m.current_leader == Some(self.id)).then_some(m.current_term)
    }

    pub(crate) fn not_leader<T>(&self) -> LeaderReply<T> {
        LeaderReply::NotLeader {
            leader: self.raft.metrics().borrow().current_leader,
        }
    }

    /// Propose `command` if this node leads: its outcome and log index.
    pub(crate) async fn local_write(&self, command: Command) -> LeaderReply<(Outcome, u64)> {
        match self.raft.client_write(command).await {
            Ok(response) => LeaderReply::Done((response.data, response.log_id.index)),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                LeaderReply::NotLeader {
                    leader: f.leader_id,
                }
            }
            Err(e) => LeaderReply::Failed(e.to_string()),
        }
    }

    /// On a leader: confirm leadership with a quorum, wait until the log is
    /// applied up to a read index, and return it.
    ///
    /// The read index is the larger of openraft's and the leader's last log
    /// index when asked. openraft's alone can trail: a leader restarted
    /// with its vote resumes leading in its old term without knowing how
    /// far its log was committed (the commit index is not stored), and
    /// then counts only what it has committed since. Everything committed
    /// is in the leader's log, and the leader commits its own log, so
    /// waiting for its last entry covers every acknowledged change.
    pub(crate) async fn local_read_index(&self) -> LeaderReply<u64> {
        let last = self.raft.metrics().borrow().last_log_index.unwrap_or(0);
        let index = match self.confirm_leadership().await {
            LeaderReply::Done(index) => index.map_or(0, |l| l.index).max(last),
            LeaderReply::NotLeader { leader } => return LeaderReply::NotLeader { leader },
            LeaderReply::Failed(why) => return LeaderReply::Failed(why),
        };
        let mut applied = self.machine.changes();
        match applied.wait_for(|a| *a >= index).await {
            Ok(_) => LeaderReply::Done(index),
            Err(e) => LeaderReply::Failed(e.to_string()),
        }
    }

    /// Have a quorum confirm that this node still leads (openraft's
    /// `ensure_linearizable`): the log id a read must wait for, or where
    /// the leader is when this node no longer is (none known when the
    /// quorum did not answer).
    async fn confirm_leadership(&self) -> LeaderReply<Option<openraft::LogId<u64>>> {
        match self.raft.ensure_linearizable().await {
            Ok(index) => LeaderReply::Done(index),
            Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f))) => {
                LeaderReply::NotLeader {
                    leader: f.leader_id,
                }
            }
            Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(_))) => {
                LeaderReply::NotLeader { leader: None }
            }
            Err(e) => LeaderReply::Failed(e.to_string()),
        }
    }

    /// On a leader: note the heartbeat, unfence a caught-up broker, and say
    /// where it stands.
    pub(crate) async fn local_heartbeat(&self, beat: Heartbeat) -> LeaderReply<HeartbeatAnswer> {
        let Some(term) = self.leading_term() else {
            return self.not_leader();
        };
        let registered = self
            .machine
            .read(|s| s.brokers.get(&beat.broker).map(|b| (b.epoch, b.fenced)));
        let (epoch, fenced) = match registered {
            Ok(Some(found)) => found,
            Ok(None) => return LeaderReply::Done(HeartbeatAnswer::StaleRegistration),
            Err(e) => return LeaderReply::Failed(e.to_string()),
        };
        if epoch != beat.epoch {
            return LeaderReply::Done(HeartbeatAnswer::StaleRegistration);
        }
        // Only a current registration's heartbeat is kept, so the session
        // table holds at most one entry per registered broker, whatever ids
        // strangers on the controller port send.
        match weir_sync::lock(&self.sessions) {
            Ok(mut sessions) => {
                sessions.start_term(term, || self.last_leader_heard(), self.session_timeout);
                sessions.last_beat.insert(beat.broker, Instant::now());
            }
            Err(e) => return LeaderReply::Failed(e.to_string()),
        }
        if !fenced {
            // Only a leader a quorum still follows may say so: one cut off
            // from its voters would otherwise keep its own broker active
            // (and `/ready`) while the others elect a new leader.
            return match self.confirm_leadership().await {
                LeaderReply::Done(_) => LeaderReply::Done(HeartbeatAnswer::Active),
                LeaderReply::NotLeader { leader } => LeaderReply::NotLeader { leader },
                LeaderReply::Failed(why) => LeaderReply::Failed(why),
            };
        }
        if !beat.caught_up {
            return LeaderReply::Done(HeartbeatAnswer::Fenced);
        }
        let unfence = Command::UnfenceBroker {
            id: beat.broker,
            epoch,
        };
        match self.local_write(unfence).await {
            LeaderReply::Done((Outcome::Done, _)) => LeaderReply::Done(HeartbeatAnswer::Active),
            LeaderReply::Done(_) => LeaderReply::Done(HeartbeatAnswer::StaleRegistration),
            LeaderReply::NotLeader { leader } => LeaderReply::NotLeader { leader },
            LeaderReply::Failed(why) => LeaderReply::Failed(why),
        }
    }

    /// On a leader: make `join.id` a learner reached at `join.addr` (a
    /// learner copies the log and never votes), or change the address of
    /// a known learner. Idempotent; a voter's id is refused. The answer is
    /// `Err` with why for a refusal.
    pub(crate) async fn local_join(&self, join: Join) -> LeaderReply<Result<(), String>> {
        if let Err(why) = check_join(&join) {
            return LeaderReply::Done(Err(why));
        }
        if self.leading_term().is_none() {
            return self.not_leader();
        }
        let membership = self.membership();
        if membership.voter_ids().any(|v| v == join.id) {
            // A controller `add-controller` made a voter, starting again:
            // taken back only with the folder it was added with, as a
            // voter of --voters is (`local_admit`).
            let Some(directory) = join.directory else {
                return LeaderReply::Done(Err(format!(
                    "node {} is a voter of the metadata quorum; a broker-only node needs an \
                     id that is not in --voters",
                    join.id
                )));
            };
            let admit = crate::voters::Admit {
                id: join.id,
                directory,
            };
            return match self.local_admit(admit).await {
                LeaderReply::Done(crate::voters::Admission::Refused(why)) => {
                    LeaderReply::Done(Err(why))
                }
                LeaderReply::Done(_) => LeaderReply::Done(Ok(())),
                LeaderReply::NotLeader { leader } => LeaderReply::NotLeader { leader },
                LeaderReply::Failed(why) => LeaderReply::Failed(why),
            };
        }
        let node = BasicNode {
            addr: join.addr.clone(),
        };
        let answer = match membership.get_node(&join.id) {
            Some(known) if known.addr == join.addr => None,
            Some(_) => {
                let change = ChangeMembers::SetNodes([(join.id, node)].into_iter().collect());
                Some(self.raft.change_membership(change, true).await)
            }
            None if membership.learner_ids().count() >= LEARNERS_MAX => {
                return LeaderReply::Done(Err(format!(
                    "the quorum already has {LEARNERS_MAX} learners (broker-only nodes)"
                )));
            }
            None => Some(self.raft.add_learner(join.id, node, false).await),
        };
        if let Some(answer) = answer {
            match membership_answer(answer) {
                LeaderReply::Done(Ok(())) => {
                    tracing::info!(node = join.id, addr = %join.addr, "a node joined the metadata quorum as a learner");
                }
                other => return other,
            }
        }
        // A learner with the controller role is bound to its directory, so
        // `add-controller` makes a voter of this very folder; a learner
        // copies the log, so binding it again to a new one loses nothing.
        let Some(directory) = join.directory else {
            return LeaderReply::Done(Ok(()));
        };
        match self.machine.read(|s| s.directories.get(&join.id).copied()) {
            Ok(Some(bound)) if bound == directory => LeaderReply::Done(Ok(())),
            Ok(_) => match self
                .local_write(Command::BindDirectory {
                    node: join.id,
                    directory: Some(directory),
                })
                .await
            {
                LeaderReply::Done(_) => LeaderReply::Done(Ok(())),
                LeaderReply::NotLeader { leader } => LeaderReply::NotLeader { leader },
                LeaderReply::Failed(why) => LeaderReply::Failed(why),
            },
            Err(e) => LeaderReply::Failed(e.to_string()),
        }
    }

    /// On a leader: unregister broker `id` (a fenced broker no partition
    /// lists as a replica), and, if it is a learner of the quorum, remove
    /// it from the membership so the leader stops sending it the log. A
    /// retry after the registration is gone still removes the learner.
    /// Answers the outcome and the log index that holds it.
    pub(crate) async fn local_unregister(&self, id: i32) -> LeaderReply<(Outcome, u64)> {
        if self.leading_term().is_none() {
            return self.not_leader();
        }
        let registered = match self.machine.read(|s| s.brokers.contains_key(&id)) {
            Ok(registered) => registered,
            Err(e) => return LeaderReply::Failed(e.to_string()),
        };
        let metrics = self.raft.metrics().borrow().clone();
        let learner = u64::try_from(id).ok().filter(|node| {
            metrics
                .membership_config
                .membership()
                .learner_ids()
                .any(|l| l == *node)
        });
        let mut index = metrics.last_applied.map_or(0, |l| l.index);
        if registered {
            match self.local_write(Command::UnregisterBroker { id }).await {
                LeaderReply::Done((Outcome::Done, at)) => index = at,
                other => return other,
            }
        } else if learner.is_none() {
            return LeaderReply::Done((
                Outcome::Refused(crate::Refusal::BrokerNotRegistered(format!(
                    "broker {id} is not registered"
                ))),
                index,
            ));
        }
        if let Some(node) = learner {
            let change = ChangeMembers::RemoveNodes([node].into_iter().collect());
            match membership_answer(self.raft.change_membership(change, false).await) {
                LeaderReply::Done(Ok(())) => {
                    tracing::info!(node, "removed a learner from the metadata quorum");
                    index = index.max(self.raft.metrics().borrow().last_log_index.unwrap_or(0));
                }
                LeaderReply::Done(Err(why)) => return LeaderReply::Failed(why),
                LeaderReply::NotLeader { leader } => return LeaderReply::NotLeader { leader },
                LeaderReply::Failed(why) => return LeaderReply::Failed(why),
            }
            // Gone from the quorum, it is forgotten: the bindings stay as
            // few as the nodes in it.
            let bound = self.machine.read(|s| s.directories.contains_key(&node));
            if matches!(bound, Ok(true)) {
                let forget = Command::BindDirectory {
                    node,
                    directory: None,
                };
                match self.local_write(forget).await {
                    LeaderReply::Done((_, at)) => index = index.max(at),
                    other => return other,
                }
            }
        }
        LeaderReply::Done((Outcome::Done, index))
    }

    /// On a leader: the quorum as DescribeQuorum tells it: each voter's log
    /// end (the index after the last entry it holds) and when it was last
    /// seen to copy the log and to hold all of it, from the replication
    /// progress this leader tracks.
    pub(crate) fn local_quorum(&self) -> LeaderReply<weir_metadata::QuorumInfo> {
        use weir_metadata::{QuorumInfo, QuorumNode, QuorumReplica};
        let metrics = self.raft.metrics().borrow().clone();
        if metrics.current_leader != Some(self.id) {
            return self.not_leader();
        }
        let last = metrics.last_log_index.unwrap_or(0);
        let now = wall_clock_ms();
        let directories = self
            .machine
            .read(|s| s.directories.clone())
            .unwrap_or_default();
        let Ok(mut progress) = weir_sync::lock(&self.progress) else {
            return LeaderReply::Failed("the progress table is poisoned".into());
        };
        let matched: HashMap<u64, u64> = metrics
            .replication
            .iter()
            .flatten()
            .map(|(id, log)| (*id, log.map_or(0, |l| l.index)))
            .collect();
        let membership = metrics.membership_config.membership().clone();
        let mut voters = Vec::new();
        let mut observers = Vec::new();
        let mut nodes = Vec::new();
        for (id, node) in membership.nodes() {
            let replica_id = i32::try_from(*id).unwrap_or(i32::MAX);
            let held = if *id == self.id {
                Some(last)
            } else {
                matched.get(id).copied()
            };
            let seen = progress.entry(*id).or_default();
            if let Some(held) = held {
                if held > seen.matched || *id == self.id {
                    seen.fetch_ms = now;
                }
                if held >= last {
                    seen.caught_up_ms = now;
                    seen.fetch_ms = now;
                }
                seen.matched = held;
            }
            let replica = QuorumReplica {
                replica_id,
                log_end_offset: held.map_or(-1, |h| i64::try_from(h + 1).unwrap_or(i64::MAX)),
                last_fetch_timestamp_ms: if seen.fetch_ms > 0 { seen.fetch_ms } else { -1 },
                last_caught_up_timestamp_ms: if seen.caught_up_ms > 0 {
                    seen.caught_up_ms
                } else {
                    -1
                },
                directory_id: directories.get(id).copied(),
            };
            if membership.voter_ids().any(|v| v == *id) {
                voters.push(replica);
                if let Some((host, port)) = node.addr.rsplit_once(':')
                    && let Ok(port) = port.parse()
                {
                    nodes.push(QuorumNode {
                        id: replica_id,
                        host: host.trim_matches(['[', ']']).to_owned(),
                        port,
                    });
                }
            } else {
                observers.push(replica);
            }
        }
        let committed = metrics.last_applied.map_or(0, |l| l.index);
        LeaderReply::Done(QuorumInfo {
            leader_id: i32::try_from(self.id).unwrap_or(i32::MAX),
            leader_epoch: i32::try_from(metrics.current_term).unwrap_or(i32::MAX),
            high_watermark: i64::try_from(committed + 1).unwrap_or(i64::MAX),
            voters,
            observers,
            nodes,
        })
    }

    /// On a leader: the unfenced brokers whose session has expired, and
    /// those whose heartbeats are late enough to probe.
    fn overdue(&self) -> OverdueBrokers {
        let Some(term) = self.leading_term() else {
            return OverdueBrokers::default();
        };
        let Ok(mut sessions) = weir_sync::lock(&self.sessions) else {
            return OverdueBrokers::default();
        };
        sessions.start_term(term, || self.last_leader_heard(), self.session_timeout);
        let active = self
            .machine
            .read(|s| {
                s.brokers
                    .values()
                    .filter(|b| !b.fenced)
                    .map(|b| Overdue {
                        broker: b.id,
                        epoch: b.epoch,
                        host: b.host.clone(),
                        port: b.port,
                    })
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        sessions.sort(
            active,
            Instant::now(),
            self.session_timeout,
            self.heartbeat_late,
        )
    }
}

impl Sessions {
    /// Start the sessions over when this node begins leading in `term`:
    /// the broker on the node that led this one last counts from when this
    /// node last heard from it, but no earlier than two thirds of a session
    /// ago; every other broker from now.
    fn start_term(
        &mut self,
        term: u64,
        last_leader: impl FnOnce() -> Option<(i32, Instant)>,
        session_timeout: Duration,
    ) {
        if self.term != term || self.since.is_none() {
            let now = Instant::now();
            let earliest = now
                .checked_sub(session_timeout - session_timeout / 3)
                .unwrap_or(now);
            self.term = term;
            self.since = Some(now);
            self.last_beat = last_leader()
                .map(|(broker, at)| (broker, at.max(earliest)))
                .into_iter()
                .collect();
            self.probed.clear();
        }
    }

    /// Sort the unfenced brokers `active` by how long ago they were heard
    /// from at `now`: past the session, or late and not probed within
    /// `late` (each such broker is marked probed now).
    fn sort(
        &mut self,
        active: Vec<Overdue>,
        now: Instant,
        session_timeout: Duration,
        late: Duration,
    ) -> OverdueBrokers {
        let since = self.since.unwrap_or(now);
        let mut found = OverdueBrokers::default();
        for broker in active {
            let last = self.last_beat.get(&broker.broker).copied().unwrap_or(since);
            let silent = now.duration_since(last);
            if silent > session_timeout {
                found.expired.push(broker);
            } else if silent > late {
                let probed = self.probed.get(&broker.broker).copied();
                if probed.is_none_or(|at| now.duration_since(at) >= late) {
                    self.probed.insert(broker.broker, now);
                    found.late.push(broker);
                }
            }
        }
        found
    }
}

/// A join's id and address, checked before anything is changed.
fn check_join(join: &Join) -> Result<(), String> {
    if i32::try_from(join.id).is_err() {
        return Err(format!("node id {} is not a broker id", join.id));
    }
    if join.addr.len() > JOIN_ADDR_BYTES_MAX {
        return Err(format!(
            "a controller address of more than {JOIN_ADDR_BYTES_MAX} bytes"
        ));
    }
    match join.addr.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {
            Ok(())
        }
        _ => Err(format!(
            "controller address '{}' is not HOST:PORT",
            join.addr
        )),
    }
}

/// A membership change's result as a leader's answer: a change the quorum
/// refuses is `Done(Err)`; one that must wait for an earlier change to
/// commit is "not leader" with no leader, which the asker retries after a
/// pause.
pub(crate) fn membership_answer<T>(
    answer: Result<T, RaftError<u64, ClientWriteError<u64, BasicNode>>>,
) -> LeaderReply<Result<(), String>> {
    use openraft::error::ChangeMembershipError;
    match answer {
        Ok(_) => LeaderReply::Done(Ok(())),
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => LeaderReply::NotLeader {
            leader: f.leader_id,
        },
        Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(
            ChangeMembershipError::InProgress(_),
        ))) => LeaderReply::NotLeader { leader: None },
        Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e))) => {
            LeaderReply::Done(Err(e.to_string()))
        }
        Err(e) => LeaderReply::Failed(e.to_string()),
    }
}

/// Fence brokers whose sessions expire, and late brokers whose listener
/// refuses connections, while this node leads; stops when the node is
/// dropped.
pub(crate) async fn watch_sessions(node: std::sync::Weak<Node>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(node) = node.upgrade() else {
            return;
        };
        let overdue = node.overdue();
        for broker in &overdue.expired {
            tracing::warn!(
                broker = broker.broker,
                timeout_ms = node.session_timeout.as_millis(),
                "fencing a broker whose session expired (no heartbeat within \
                 broker.session.timeout.ms); its leaderships move to in-sync followers"
            );
            if !fence(&node, broker).await {
                break;
            }
        }
        for broker in gone(overdue.late, node.heartbeat_late).await {
            tracing::warn!(
                broker = broker.broker,
                listener = %format!("{}:{}", broker.host, broker.port),
                "fencing a broker that stopped heartbeating and whose listener refuses \
                 connections (its process is gone); its leaderships move to in-sync followers"
            );
            if !fence(&node, &broker).await {
                break;
            }
        }
    }
}

/// Fence `broker`'s registration through the log; false once this node no
/// longer leads.
async fn fence(node: &Node, broker: &Overdue) -> bool {
    let command = Command::FenceBroker {
        id: broker.broker,
        epoch: broker.epoch,
    };
    match node.local_write(command).await {
        LeaderReply::Done(_) => true,
        LeaderReply::NotLeader { .. } => false,
        LeaderReply::Failed(why) => {
            tracing::error!(broker = broker.broker, error = %why, "cannot fence a broker");
            true
        }
    }
}

/// The brokers among `late` whose Kafka listener refuses a connection,
/// each tried at once and for at most `wait`. Any other outcome (accepted,
/// unreachable, no answer in time) proves nothing and leaves the broker to
/// its session.
async fn gone(late: Vec<Overdue>, wait: Duration) -> Vec<Overdue> {
    let mut probes = tokio::task::JoinSet::new();
    for broker in late {
        probes.spawn(async move {
            let Ok(port) = u16::try_from(broker.port) else {
                return None;
            };
            let connect = tokio::net::TcpStream::connect((broker.host.as_str(), port));
            match tokio::time::timeout(wait, connect).await {
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => Some(broker),
                _ => None,
            }
        });
    }
    let mut refused = Vec::new();
    while let Some(probe) = probes.join_next().await {
        if let Ok(Some(broker)) = probe {
            refused.push(broker);
        }
    }
    refused
}

/// `auto.leader.rebalance.enable` and its companions.
#[derive(Debug, Clone, Copy)]
pub struct LeaderRebalance {
    /// `auto.leader.rebalance.enable`.
    pub enabled: bool,
    /// `leader.imbalance.check.interval.seconds`.
    pub interval: Duration,
    /// `leader.imbalance.per.broker.percentage`: a broker's partitions are
    /// given back to it once more than this share of those it is the
    /// preferred replica of are led elsewhere.
    pub per_broker_percentage: u32,
}

/// While this node leads, every `interval`: elect the preferred leader of
/// the partitions of each broker whose imbalance passes the threshold (when
/// rebalancing is on), and a leader for leaderless partitions whose topic
/// has since allowed an unclean election (Kafka's controller runs the same
/// two checks). Stops when the node is dropped.
pub(crate) async fn rebalance_leaders(node: std::sync::Weak<Node>, settings: LeaderRebalance) {
    use crate::state::ElectionKind;
    let mut tick = tokio::time::interval(settings.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(node) = node.upgrade() else {
            return;
        };
        if node.leading_term().is_none() {
            continue;
        }
        let due = node.machine.read(|s| {
            let preferred = if settings.enabled {
                imbalanced(s, settings.per_broker_percentage)
            } else {
                Vec::new()
            };
            (preferred, s.unclean_election_candidates())
        });
        let Ok((preferred, unclean)) = due else {
            continue;
        };
        for (partitions, kind) in [
            (preferred, ElectionKind::Preferred),
            (unclean, ElectionKind::Unclean),
        ] {
            if partitions.is_empty() {
                continue;
            }
            tracing::info!(partitions = partitions.len(), ?kind, "electing leaders");
            let command = Command::ElectLeaders {
                partitions: Some(partitions),
                election_type: kind,
            };
            if let LeaderReply::Failed(why) = node.local_write(command).await {
                tracing::warn!(error = %why, ?kind, "cannot elect leaders");
            }
        }
    }
}

/// The partitions a preferred election should move: those of every broker
/// for which more than `percentage` per cent of the partitions it is the
/// preferred replica of are led by another (Kafka's
/// `leader.imbalance.per.broker.percentage` rule).
fn imbalanced(state: &crate::ClusterState, percentage: u32) -> Vec<(String, i32)> {
    let movable: std::collections::HashSet<(String, i32)> =
        state.imbalanced_partitions().into_iter().collect();
    let mut preferred: HashMap<i32, usize> = HashMap::new();
    let mut led_elsewhere: HashMap<i32, Vec<(String, i32)>> = HashMap::new();
    for (name, topic) in &state.topics {
        for (index, p) in (0..).zip(&topic.partitions) {
            let Some(&first) = p.replicas.first() else {
                continue;
            };
            *preferred.entry(first).or_default() += 1;
            if movable.contains(&(name.clone(), index)) {
                led_elsewhere
                    .entry(first)
                    .or_default()
                    .push((name.clone(), index));
            }
        }
    }
    led_elsewhere
        .into_iter()
        .filter(|(broker, moved)| {
            let total = preferred.get(broker).copied().unwrap_or(0).max(1);
            moved.len() * 100 > total * percentage as usize
        })
        .flat_map(|(_, moved)| moved)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_join_names_a_broker_id_and_a_bounded_host_and_port() {
        let join = |id: u64, addr: &str| {
            check_join(&Join {
                id,
                addr: addr.to_owned(),
                directory: None,
            })
        };
        assert!(join(4, "10.0.0.4:9093").is_ok());
        assert!(join(4, "[::1]:9093").is_ok());
        assert!(join(1 << 40, "10.0.0.4:9093").is_err());
        for bad in ["10.0.0.4", ":9093", "h:0", "h:99999", "h:x"] {
            assert!(join(4, bad).is_err(), "{bad}");
        }
        let long = format!("{}:9093", "h".repeat(JOIN_ADDR_BYTES_MAX));
        assert!(join(4, &long).is_err());
    }

    #[test]
    fn a_new_term_judges_the_last_leader_by_when_it_was_last_heard_and_no_earlier_than_two_thirds_of_a_session()
     {
        let session = Duration::from_millis(1_500);
        let now = Instant::now();
        let mut sessions = Sessions::default();
        // Heard 200 ms ago: its session runs from then.
        let heard = now - Duration::from_millis(200);
        sessions.start_term(1, || Some((2, heard)), session);
        assert_eq!(sessions.last_beat.get(&2), Some(&heard));
        assert_eq!(
            sessions.last_beat.len(),
            1,
            "every other broker counts from now"
        );
        // The same term keeps what it has.
        sessions.last_beat.insert(3, now);
        sessions.start_term(1, || None, session);
        assert_eq!(sessions.last_beat.len(), 2);
        // Heard long ago: it still has a third of a session from the start.
        let long_ago = now.checked_sub(Duration::from_secs(60)).unwrap_or(now);
        sessions.start_term(2, || Some((2, long_ago)), session);
        let since = sessions.since.expect("the term started");
        let last = sessions.last_beat[&2];
        assert!(last >= since - (session - session / 3));
        assert!(
            !sessions.last_beat.contains_key(&3),
            "a new term starts over"
        );
    }

    #[test]
    fn silent_brokers_are_fenced_after_a_session_and_probed_once_per_late_interval() {
        let session = Duration::from_millis(1_500);
        let late = Duration::from_millis(500);
        let start = Instant::now();
        let broker = |id| Overdue {
            broker: id,
            epoch: 7,
            host: "127.0.0.1".into(),
            port: 9092,
        };
        let mut sessions = Sessions::default();
        sessions.start_term(1, || None, session);
        let at = |ms| start + Duration::from_millis(ms);
        sessions.last_beat.insert(1, at(0));
        sessions.last_beat.insert(2, at(0));
        sessions.last_beat.insert(3, at(0));
        let all = || vec![broker(1), broker(2), broker(3)];
        // Everyone heard from within the late interval: nothing to do.
        let found = sessions.sort(all(), at(400), session, late);
        assert!(found.expired.is_empty() && found.late.is_empty());
        // Broker 3 keeps beating; 1 and 2 go quiet: probed once...
        sessions.last_beat.insert(3, at(500));
        let found = sessions.sort(all(), at(600), session, late);
        assert_eq!(found.late, vec![broker(1), broker(2)]);
        // ...not again within the late interval...
        let found = sessions.sort(all(), at(900), session, late);
        assert!(found.late.is_empty());
        // ...then again after it, while the session lasts.
        sessions.last_beat.insert(3, at(1_100));
        let found = sessions.sort(all(), at(1_200), session, late);
        assert_eq!(found.late.len(), 2);
        // Past the session they are fenced whatever a probe said.
        sessions.last_beat.insert(3, at(1_500));
        let found = sessions.sort(all(), at(1_600), session, late);
        assert_eq!(found.expired, vec![broker(1), broker(2)]);
        assert!(found.late.is_empty());
        // A new term forgets the probes as well as the beats.
        sessions.start_term(2, || None, session);
        assert!(sessions.probed.is_empty());
    }
}
