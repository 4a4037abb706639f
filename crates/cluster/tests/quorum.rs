//! The metadata quorum over real sockets: three controllers on 127.0.0.1,
//! each with its own Raft folder, talking HTTP to each other as separate
//! `weir serve` processes do. A node is stopped and started again from its
//! folder, as a crash and restart would (its listener and Raft go away; its
//! files stay).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tempfile::TempDir;
use uuid::Uuid;
use weir_cluster::{
    Command, Controller, ControllerConfig, Heartbeat, HeartbeatAnswer, Outcome, RaftMetadataStore,
};
use weir_metadata::{MetadataError, MetadataStore, NewTopic};

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// How long the cluster may take to elect a leader or apply a change.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(20);

struct Cluster {
    dirs: Vec<TempDir>,
    addrs: BTreeMap<u64, String>,
    nodes: BTreeMap<u64, Arc<Controller>>,
    snapshot_every: u64,
    session_timeout: Duration,
}

impl Cluster {
    async fn start(
        voters: u64,
        snapshot_every: u64,
    ) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        // Brokers here heartbeat only in the liveness test.
        Self::start_with_sessions(voters, snapshot_every, Duration::from_secs(600)).await
    }

    async fn start_with_sessions(
        voters: u64,
        snapshot_every: u64,
        session_timeout: Duration,
    ) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        let mut listeners = BTreeMap::new();
        let mut addrs = BTreeMap::new();
        for id in 1..=voters {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            addrs.insert(id, listener.local_addr()?.to_string());
            listeners.insert(id, listener);
        }
        let mut cluster = Self {
            dirs: (0..voters)
                .map(|_| tempfile::tempdir())
                .collect::<Result<_, _>>()?,
            addrs,
            nodes: BTreeMap::new(),
            snapshot_every,
            session_timeout,
        };
        for (id, listener) in listeners {
            cluster.start_node(id, listener).await?;
        }
        Ok(cluster)
    }

    fn config(&self, id: u64) -> ControllerConfig {
        let dir = self.dirs[usize::try_from(id - 1).unwrap_or(0)]
            .path()
            .join("raft");
        let mut config = ControllerConfig::new(id, self.addrs.clone(), dir);
        config.election_timeout = Duration::from_millis(300);
        config.heartbeat = Duration::from_millis(50);
        config.write_timeout = Duration::from_secs(3);
        config.snapshot_every = self.snapshot_every;
        config.broker_session_timeout = self.session_timeout;
        config
    }

    async fn start_node(&mut self, id: u64, listener: tokio::net::TcpListener) -> TestResult {
        let node = Controller::start(self.config(id), listener).await?;
        self.nodes.insert(id, node);
        Ok(())
    }

    /// Start node `id` again from its folder, on its address.
    async fn restart(&mut self, id: u64) -> TestResult {
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        let listener = loop {
            match tokio::net::TcpListener::bind(&self.addrs[&id]).await {
                Ok(l) => break l,
                Err(e) if Instant::now() < deadline => {
                    tracing_free_wait(e).await;
                }
                Err(e) => return Err(e.into()),
            }
        };
        self.start_node(id, listener).await
    }

    async fn stop(&mut self, id: u64) {
        if let Some(node) = self.nodes.remove(&id) {
            node.shutdown().await;
        }
    }

    fn store(&self, id: u64) -> RaftMetadataStore {
        RaftMetadataStore::new(self.nodes[&id].clone(), tokio::runtime::Handle::current())
    }

    /// Wait until the running nodes agree on one leader among them.
    async fn leader(&self) -> Result<u64, Box<dyn std::error::Error + Send + Sync>> {
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        loop {
            let seen: BTreeSet<Option<u64>> = self.nodes.values().map(|n| n.leader()).collect();
            if let [Some(leader)] = seen.iter().copied().collect::<Vec<_>>()[..]
                && self.nodes.contains_key(&leader)
            {
                return Ok(leader);
            }
            if Instant::now() > deadline {
                return Err(format!("no agreed leader: {seen:?}").into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Wait until every running node has applied everything committed.
    async fn converge(&self) -> TestResult {
        self.leader().await?;
        for node in self.nodes.values() {
            node.catch_up().await?;
        }
        Ok(())
    }
}

async fn tracing_free_wait(_: std::io::Error) {
    tokio::time::sleep(Duration::from_millis(50)).await;
}

/// Register and unfence brokers 1..=n through node `via`.
async fn register_brokers(node: &Controller, n: i32) -> TestResult {
    for id in 1..=n {
        let Outcome::BrokerEpoch { epoch } = node
            .write(Command::RegisterBroker {
                id,
                host: "127.0.0.1".into(),
                port: 9000 + id,
                rack: None,
                endpoints: Vec::new(),
            })
            .await?
        else {
            return Err("registration refused".into());
        };
        node.write(Command::UnfenceBroker { id, epoch }).await?;
    }
    Ok(())
}

fn new_topic(name: &str, partitions: i32, replication_factor: i16) -> NewTopic {
    NewTopic {
        name: name.into(),
        id: Uuid::new_v4(),
        partitions,
        replication_factor,
        configs: BTreeMap::new(),
        assignments: None,
    }
}

/// Run a blocking metadata call off the runtime's workers, as the broker does.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, tokio::task::JoinError> {
    tokio::task::spawn_blocking(f).await
}

fn names(store: &RaftMetadataStore) -> Vec<String> {
    store.topics().into_iter().map(|t| t.name).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_learner_that_joins_after_the_log_was_purged_is_sent_the_snapshot() -> TestResult {
    // Snapshots every 20 entries, keeping 20 behind: the start of the log
    // is long gone when the learner joins.
    let cluster = Cluster::start(3, 20).await?;
    let leader = cluster.leader().await?;
    register_brokers(&cluster.nodes[&leader], 3).await?;
    let mut committed = Vec::new();
    for i in 0..60 {
        let store = cluster.store(leader);
        let name = format!("t-{i}");
        blocking(move || store.create_topic(new_topic(&name, 1, 3))).await??;
        committed.push(format!("t-{i}"));
    }
    let purged = cluster.nodes[&leader]
        .metrics()
        .purged
        .map_or(0, |log| log.index);
    assert!(purged > 20, "the leader purged its log only to {purged}");

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let dir = tempfile::tempdir()?;
    let mut config = cluster.config(1);
    config.node_id = 4;
    config.dir = dir.path().join("raft");
    config.learner = Some(listener.local_addr()?.to_string());
    config.controller_role = false;
    let learner = Controller::start(config, listener).await?;
    learner.join().await?;
    learner.catch_up().await?;
    let installed = learner.metrics().snapshot.map_or(0, |log| log.index);
    assert!(
        installed >= purged,
        "the learner holds a snapshot to {installed}, the leader purged to {purged}"
    );
    committed.sort();
    let store = RaftMetadataStore::new(learner.clone(), tokio::runtime::Handle::current());
    assert_eq!(names(&store), committed);
    // It keeps following from the log after the snapshot.
    let store = cluster.store(leader);
    blocking(move || store.create_topic(new_topic("after-the-snapshot", 1, 3))).await??;
    learner.catch_up().await?;
    assert!(
        learner.read(|s| s.topics.contains_key("after-the-snapshot"))?,
        "a change after the snapshot did not reach the learner"
    );
    learner.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_change_made_through_any_node_is_applied_on_every_node() -> TestResult {
    let cluster = Cluster::start(3, 5000).await?;
    let leader = cluster.leader().await?;
    register_brokers(&cluster.nodes[&leader], 3).await?;
    let follower = *cluster
        .nodes
        .keys()
        .find(|id| **id != leader)
        .ok_or("no follower")?;
    let store = cluster.store(follower);
    let meta = blocking(move || store.create_topic(new_topic("orders", 6, 3))).await??;
    assert_eq!((meta.partitions, meta.replication_factor), (6, 3));
    // Leaders spread over the brokers, each partition on three distinct ones.
    let leaders: BTreeSet<i32> = meta.assignments.iter().map(|a| a.leader).collect();
    assert_eq!(leaders, BTreeSet::from([1, 2, 3]));
    for a in &meta.assignments {
        assert_eq!(a.replicas.iter().collect::<BTreeSet<_>>().len(), 3);
        assert_eq!(a.isr, a.replicas);
    }
    cluster.converge().await?;
    for id in cluster.nodes.keys() {
        let store = cluster.store(*id);
        assert_eq!(
            store.topic("orders").map(|t| t.id),
            Some(meta.id),
            "node {id}"
        );
        assert!(
            !store.cluster_id().is_empty(),
            "node {id} has no cluster id"
        );
    }
    // A second create of the name is refused wherever it is asked.
    let store = cluster.store(leader);
    let again = blocking(move || store.create_topic(new_topic("orders", 1, 1))).await?;
    assert!(
        matches!(again, Err(MetadataError::TopicAlreadyExists(_))),
        "{again:?}"
    );
    // A replication factor above the broker count is refused.
    let store = cluster.store(follower);
    let too_many = blocking(move || store.create_topic(new_topic("wide", 1, 4))).await?;
    assert!(
        matches!(too_many, Err(MetadataError::InvalidReplicationFactor(_))),
        "{too_many:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_change_loses_no_committed_metadata_and_a_restarted_node_catches_up() -> TestResult
{
    // Snapshots every 20 entries, so restarts load a snapshot and a log tail.
    let mut cluster = Cluster::start(3, 20).await?;
    let first = cluster.leader().await?;
    register_brokers(&cluster.nodes[&first], 3).await?;
    let mut committed = Vec::new();
    for i in 0..30 {
        let store = cluster.store(first);
        let name = format!("before-{i}");
        blocking(move || store.create_topic(new_topic(&name, 1, 3))).await??;
        committed.push(format!("before-{i}"));
    }
    let ids = blocking({
        let store = cluster.store(first);
        move || store.allocate_producer_ids(1000)
    })
    .await??;

    cluster.stop(first).await;
    let second = cluster.leader().await?;
    assert_ne!(second, first);
    for i in 0..30 {
        let store = cluster.store(second);
        let name = format!("after-{i}");
        blocking(move || store.create_topic(new_topic(&name, 1, 2))).await??;
        committed.push(format!("after-{i}"));
    }
    // Producer ids handed out before the change are never handed out again.
    let next = blocking({
        let store = cluster.store(second);
        move || store.allocate_producer_ids(1)
    })
    .await??;
    assert!(
        next >= ids + 1000,
        "id {next} reissued after {ids}..{}",
        ids + 1000
    );

    cluster.restart(first).await?;
    cluster.converge().await?;
    committed.sort();
    for id in cluster.nodes.keys() {
        assert_eq!(names(&cluster.store(*id)), committed, "node {id}");
    }

    // Every node stopped, then all started again from their folders.
    for id in [1, 2, 3] {
        cluster.stop(id).await;
    }
    for id in [1, 2, 3] {
        cluster.restart(id).await?;
    }
    cluster.converge().await?;
    for id in cluster.nodes.keys() {
        let got = names(&cluster.store(*id));
        if got != committed {
            for (n, node) in &cluster.nodes {
                let m = node.metrics();
                eprintln!(
                    "node {n}: state {:?} leader {:?} term {} last_log {:?} applied {:?} snapshot {:?} purged {:?} watch {}",
                    m.state,
                    m.current_leader,
                    m.current_term,
                    m.last_log_index,
                    m.last_applied,
                    m.snapshot,
                    m.purged,
                    *node.changes().borrow()
                );
            }
        }
        assert_eq!(got, committed, "node {id} after a full restart");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_minority_neither_elects_a_leader_nor_commits() -> TestResult {
    let mut cluster = Cluster::start(3, 5000).await?;
    let leader = cluster.leader().await?;
    register_brokers(&cluster.nodes[&leader], 3).await?;

    // A leader cut off from both followers cannot commit.
    let followers: Vec<u64> = cluster
        .nodes
        .keys()
        .copied()
        .filter(|id| *id != leader)
        .collect();
    for id in &followers {
        cluster.stop(*id).await;
    }
    let store = cluster.store(leader);
    let refused = blocking(move || store.create_topic(new_topic("lonely", 1, 1))).await?;
    assert!(
        matches!(refused, Err(MetadataError::NoController(_))),
        "{refused:?}"
    );
    assert!(cluster.nodes[&leader].read(|s| s.topic_meta("lonely").is_none())?);

    // A follower left alone never becomes leader, through ten election
    // timeouts, and cannot commit either.
    cluster.stop(leader).await;
    let alone = followers[0];
    cluster.restart(alone).await?;
    let node = cluster.nodes[&alone].clone();
    let watch_until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < watch_until {
        let metrics = node.metrics();
        assert!(
            !metrics.state.is_leader(),
            "node {alone} elected itself alone: {metrics:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let store = cluster.store(alone);
    let refused = blocking(move || store.create_topic(new_topic("lonely", 1, 1))).await?;
    assert!(
        matches!(refused, Err(MetadataError::NoController(_))),
        "{refused:?}"
    );

    // With a majority back, the quorum elects and commits again. (The
    // unanswered "lonely" may commit now too: a write that timed out has an
    // unknown outcome, as a Kafka request that timed out has.)
    cluster.restart(leader).await?;
    let leader = cluster.leader().await?;
    let store = cluster.store(leader);
    blocking(move || store.create_topic(new_topic("together", 1, 1))).await??;
    Ok(())
}

/// Heartbeat for `broker` through `node` every 100 ms until dropped.
fn heartbeats(node: Arc<Controller>, broker: i32, epoch: i64) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let beat = Heartbeat {
                broker,
                epoch,
                caught_up: true,
            };
            let _ = node.heartbeat(beat).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}

/// Wait until `check` holds on `node`'s applied metadata.
async fn wait_state(
    node: &Controller,
    what: &str,
    check: impl Fn(&weir_cluster::ClusterState) -> bool,
) -> TestResult {
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    while !node.read(&check)? {
        if Instant::now() > deadline {
            return Err(format!("timed out waiting until {what}").into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_broker_whose_session_expires_is_fenced_and_its_leaderships_move() -> TestResult {
    let cluster = Cluster::start_with_sessions(3, 5000, Duration::from_millis(1500)).await?;
    let leader = cluster.leader().await?;
    let node = cluster.nodes[&leader].clone();
    let mut beating = BTreeMap::new();
    let mut epochs = BTreeMap::new();
    for broker in 1..=3 {
        let epoch = node
            .register_broker(broker, "127.0.0.1".into(), 9000 + broker, None, Vec::new())
            .await?;
        epochs.insert(broker, epoch);
        // Heartbeats go through different nodes: followers forward them.
        let via = cluster.nodes[&u64::try_from(broker)?].clone();
        beating.insert(broker, heartbeats(via, broker, epoch));
    }
    wait_state(&node, "every broker is unfenced", |s| {
        s.brokers.values().filter(|b| !b.fenced).count() == 3
    })
    .await?;
    let store = cluster.store(leader);
    let meta = blocking(move || store.create_topic(new_topic("busy", 6, 3))).await??;
    assert!(meta.assignments.iter().any(|a| a.leader == 3));

    // Broker 3 stops heartbeating: fenced, out of every ISR, leading nothing.
    beating.remove(&3).ok_or("no heartbeat task")?.abort();
    wait_state(&node, "broker 3 is fenced", |s| s.brokers[&3].fenced).await?;
    let topic = node.read(|s| s.topic_meta("busy"))?.ok_or("topic gone")?;
    for a in &topic.assignments {
        assert_ne!(a.leader, 3, "{a:?}");
        assert!(!a.isr.contains(&3), "{a:?}");
        assert!(a.leader == 1 || a.leader == 2, "{a:?}");
    }
    // The others, heartbeating, stay unfenced.
    assert!(node.read(|s| !s.brokers[&1].fenced && !s.brokers[&2].fenced)?);

    // It heartbeats again, caught up: unfenced (the ISR it rejoins through
    // its partitions' leaders, not here).
    beating.insert(3, heartbeats(node.clone(), 3, epochs[&3]));
    wait_state(&node, "broker 3 is unfenced", |s| !s.brokers[&3].fenced).await?;

    // A heartbeat from an older registration is told to register again.
    let stale = node
        .heartbeat(Heartbeat {
            broker: 3,
            epoch: epochs[&3] - 1,
            caught_up: true,
        })
        .await?;
    assert_eq!(stale, HeartbeatAnswer::StaleRegistration);
    // So is one from a broker that never registered.
    let stranger = node
        .heartbeat(Heartbeat {
            broker: 99,
            epoch: 1,
            caught_up: true,
        })
        .await?;
    assert_eq!(stranger, HeartbeatAnswer::StaleRegistration);
    Ok(())
}
