//! Fault injection for the end-to-end fault tests: a [`Node`] is one
//! `weir serve` process, in a network namespace of a [`Net`] (or in the root
//! namespace), that can be killed, stopped, continued and restarted on the
//! same address and data folder; a [`Schedule`] is a list of faults
//! generated from a seed, applied at time offsets, that remembers what it
//! actually did so a failure can say how to replay it.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tempfile::TempDir;

use super::netns::{Net, NodeNet};
use super::{BROKER_REBIND_TIMEOUT, BROKER_START_TIMEOUT, BROKER_STOP_TIMEOUT};

/// The port a node in its own namespace listens on (its address is its own).
pub const NODE_PORT: u16 = 9092;
/// The environment variable that replays a fault schedule.
pub const SEED_ENV: &str = "WEIR_FAULT_SEED";
/// How much of a node's stderr is shown when a test fails.
const STDERR_TAIL_BYTES_MAX: u64 = 64 * 1024;

/// One `weir serve` process and everything needed to start it again: its
/// namespace (if any), address, data folder and extra arguments. Killed on drop.
pub struct Node {
    name: String,
    net: Option<NodeNet>,
    listen: String,
    extra_args: Vec<String>,
    dir: TempDir,
    stderr_path: PathBuf,
    child: Option<Child>,
    lives: u32,
}

impl Node {
    /// Start `weir serve` inside `net`'s namespace, listening on
    /// `<ip>:9092`, with `extra_args` after the defaults (later: `--node-id`,
    /// `--controller-listen`, `--voters`).
    pub fn start_in(net: &NodeNet, extra_args: &[&str]) -> anyhow::Result<Self> {
        let listen = format!("{}:{NODE_PORT}", net.ip);
        Self::start(
            format!("node {} ({})", net.index, net.ns),
            Some(net.clone()),
            listen,
            extra_args,
        )
    }

    /// Start one `weir serve` per `(namespace, arguments)`, all launched
    /// before any is awaited: a cluster node prints its listening line only
    /// once a quorum of its voters runs.
    pub fn start_all_in(specs: &[(NodeNet, Vec<String>)]) -> anyhow::Result<Vec<Self>> {
        let mut nodes = Vec::with_capacity(specs.len());
        let mut pending = Vec::with_capacity(specs.len());
        for (net, args) in specs {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let mut node = Self::unstarted(
                format!("node {} ({})", net.index, net.ns),
                Some(net.clone()),
                format!("{}:{NODE_PORT}", net.ip),
                &args,
            )?;
            pending.push(node.launch()?);
            nodes.push(node);
        }
        for (node, launched) in nodes.iter_mut().zip(pending) {
            node.await_listening(launched)?;
        }
        Ok(nodes)
    }

    /// Start `weir serve` in the root namespace, listening on `listen`.
    pub fn start_local(listen: &str, extra_args: &[&str]) -> anyhow::Result<Self> {
        Self::start(format!("node {listen}"), None, listen.into(), extra_args)
    }

    fn start(
        name: String,
        net: Option<NodeNet>,
        listen: String,
        extra_args: &[&str],
    ) -> anyhow::Result<Self> {
        let mut node = Self::unstarted(name, net, listen, extra_args)?;
        node.spawn()?;
        Ok(node)
    }

    /// A node with its folder made, not yet started.
    fn unstarted(
        name: String,
        net: Option<NodeNet>,
        listen: String,
        extra_args: &[&str],
    ) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("weir-fault-")
            .tempdir()
            .context("cannot create the node's temporary folder")?;
        let stderr_path = dir.path().join("broker.stderr");
        Ok(Self {
            name,
            net,
            listen,
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            dir,
            stderr_path,
            child: None,
            lives: 0,
        })
    }

    /// `host:port` for `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        self.listen.clone()
    }

    /// The node's namespace, when it runs in one.
    pub fn net(&self) -> Option<&NodeNet> {
        self.net.as_ref()
    }

    /// The node's data folder, kept across restarts.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The process id of the running life.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kill the node with SIGKILL, as a crash would, and reap it.
    pub fn sigkill(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child
                .kill()
                .with_context(|| format!("cannot SIGKILL {}", self.name))?;
            child
                .wait()
                .with_context(|| format!("cannot reap {}", self.name))?;
        }
        Ok(())
    }

    /// Stop the node with SIGTERM (a cluster node hands its leaderships over
    /// first) and wait, bounded, for it to exit.
    pub fn terminate(&mut self) -> anyhow::Result<ExitStatus> {
        self.signal("TERM")?;
        let mut child = self
            .child
            .take()
            .with_context(|| format!("{} is not running", self.name))?;
        let deadline = Instant::now() + BROKER_STOP_TIMEOUT;
        loop {
            if let Some(status) = child
                .try_wait()
                .with_context(|| format!("cannot wait for {}", self.name))?
            {
                return Ok(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "{} did not exit within {BROKER_STOP_TIMEOUT:?} of SIGTERM",
                    self.name
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether a life of the node runs (it may be stopped by SIGSTOP).
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    /// The node's name in messages (`node 0 (weir-...-n0)`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Freeze the node with SIGSTOP: its sockets stay open, nothing answers.
    pub fn sigstop(&mut self) -> anyhow::Result<()> {
        self.signal("STOP")
    }

    /// Thaw a node frozen by [`Node::sigstop`].
    pub fn sigcont(&mut self) -> anyhow::Result<()> {
        self.signal("CONT")
    }

    /// Start the node again (killing the running life first, if any) on the
    /// same address and data folder. Retries briefly while the previous
    /// life's port is not yet free.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.sigkill()?;
        let deadline = Instant::now() + BROKER_REBIND_TIMEOUT;
        loop {
            match self.spawn() {
                Ok(()) => return Ok(()),
                Err(_) if Instant::now() < deadline && self.stderr_says_address_in_use() => {
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(err) => return Err(err),
            }
        }
    }

    /// The last part of the node's stderr (all lives).
    pub fn stderr_tail(&self) -> String {
        let Ok(mut file) = File::open(&self.stderr_path) else {
            return format!("(no stderr of {})", self.name);
        };
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        let start = len.saturating_sub(STDERR_TAIL_BYTES_MAX);
        let _ = file.seek(SeekFrom::Start(start));
        let mut text = String::new();
        let _ = file.read_to_string(&mut text);
        format!(
            "----- {} stderr ({} bytes from {start}, {} lives) -----\n{text}",
            self.name,
            len - start,
            self.lives
        )
    }

    fn signal(&mut self, signal: &str) -> anyhow::Result<()> {
        let pid = self
            .pid()
            .with_context(|| format!("{} is not running", self.name))?;
        // The workspace forbids unsafe code, so the signal goes through kill(1).
        let sent = Command::new("kill")
            .args([&format!("-{signal}"), &pid.to_string()])
            .status()
            .context("cannot run kill(1)")?;
        if !sent.success() {
            bail!("kill -{signal} {pid} ({}) failed: {sent}", self.name);
        }
        Ok(())
    }

    fn stderr_says_address_in_use(&self) -> bool {
        std::fs::read_to_string(&self.stderr_path)
            .map(|s| s.lines().last().is_some_and(|l| l.contains("in use")))
            .unwrap_or(false)
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let pending = self.launch()?;
        self.await_listening(pending)
    }

    /// Start the process and return at once; [`Node::await_listening`]
    /// waits for its listening line. Split so a cluster's nodes can all be
    /// started before any of them prints it (a cluster node listens only
    /// once the quorum has formed).
    fn launch(&mut self) -> anyhow::Result<Pending> {
        self.lives += 1;
        let stderr = File::options()
            .create(true)
            .append(true)
            .open(&self.stderr_path)
            .context("cannot open the node's stderr file")?;
        let program = env!("CARGO_BIN_EXE_weir");
        // `ip netns exec` execs the program, so the child's pid is the broker's.
        let mut command = match &self.net {
            Some(net) => net.command(program),
            None => Command::new(program),
        };
        command
            .arg("serve")
            .arg("--listen")
            .arg(&self.listen)
            .arg("--data-dir")
            .arg(self.data_dir())
            .args(&self.extra_args);
        if super::admin_listen_in(&self.extra_args).is_none() {
            // Never the default port: nodes in the root namespace share it.
            command.args(["--admin-listen", "127.0.0.1:0"]);
        }
        let mut child = command
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("cannot start weir serve for {}", self.name))?;
        let stdout = child.stdout.take().context("no stdout pipe")?;
        let (tx, rx) = mpsc::sync_channel::<String>(1);
        // The reader keeps draining stdout after the listening line so the
        // broker never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if !sent && let Some(addr) = line.strip_prefix("listening on ") {
                    let _ = tx.send(addr.trim().to_string());
                    sent = true;
                }
            }
        });
        Ok(Pending {
            child: Some(child),
            rx,
        })
    }

    /// Wait (bounded) for a launched process's listening line; it becomes
    /// the running life.
    fn await_listening(&mut self, mut pending: Pending) -> anyhow::Result<()> {
        let mut child = pending.child.take().context("a launch awaited twice")?;
        match pending.rx.recv_timeout(BROKER_START_TIMEOUT) {
            Ok(addr) => {
                self.listen = addr;
                self.child = Some(child);
                Ok(())
            }
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "{} (life {}) printed no `listening on` line within {BROKER_START_TIMEOUT:?}\n{}",
                    self.name,
                    self.lives,
                    self.stderr_tail()
                )
            }
        }
    }
}

/// A launched `weir serve` that has not yet printed its listening line;
/// killed on drop unless [`Node::await_listening`] took it.
struct Pending {
    child: Option<Child>,
    rx: mpsc::Receiver<String>,
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGKILL ends a stopped process too.
            let _ = child.kill();
            let _ = child.wait();
        }
        // libtest shows this only for a failing test.
        eprintln!("{}", self.stderr_tail());
    }
}

/// The port a cluster node's controller listener (Raft) binds, beside
/// [`NODE_PORT`] on the node's own address.
pub const CONTROLLER_PORT: u16 = 9093;
/// How long one Metadata request to one node may block (a node behind a
/// cut link answers nothing).
const METADATA_IO_TIMEOUT: Duration = Duration::from_secs(3);

/// One partition as one node's Metadata answer describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionView {
    /// The topic.
    pub topic: String,
    /// The partition index.
    pub partition: i32,
    /// The partition's error code in the answer (0: none).
    pub error: i16,
    /// The leader's node id, -1 for none.
    pub leader: i32,
    /// The leader epoch.
    pub leader_epoch: i32,
    /// The assigned replicas, in the answer's order.
    pub replicas: Vec<i32>,
    /// The in-sync replicas, sorted.
    pub isr: Vec<i32>,
}

impl PartitionView {
    /// Every assigned replica is in sync and there is a leader.
    pub fn fully_in_sync(&self) -> bool {
        let mut replicas = self.replicas.clone();
        replicas.sort_unstable();
        self.error == 0 && self.leader >= 0 && replicas == self.isr
    }
}

impl fmt::Display for PartitionView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{} leader {} epoch {} replicas {:?} isr {:?}",
            self.topic, self.partition, self.leader, self.leader_epoch, self.replicas, self.isr
        )?;
        if self.error != 0 {
            write!(f, " error {}", self.error)?;
        }
        Ok(())
    }
}

/// A cluster of `weir serve` nodes, each in its own namespace of one
/// [`Net`], every one a voter of the metadata quorum and a broker. Node
/// `index` (0-based, as in `nodes`) has node id `index + 1`, listens on
/// `<ip>:9092` and runs its controller on `<ip>:9093`.
pub struct Cluster {
    /// The nodes, by index. Declared before `net`, so they are killed before
    /// their namespaces are removed.
    pub nodes: Vec<Node>,
    net: Net,
}

impl Cluster {
    /// Start `size` nodes with `settings` (`--set KEY=VALUE` each) and wait
    /// until each prints its listening line (the quorum formed).
    pub fn start(size: usize, settings: &[(&str, &str)]) -> anyhow::Result<Self> {
        let mut net = Net::new()?;
        let mut nets = Vec::with_capacity(size);
        for _ in 0..size {
            nets.push(net.add_node()?);
        }
        let voters: Vec<String> = nets
            .iter()
            .map(|n| format!("{}@{}:{CONTROLLER_PORT}", Self::node_id(n.index), n.ip))
            .collect();
        let voters = voters.join(",");
        let specs: Vec<(NodeNet, Vec<String>)> = nets
            .iter()
            .map(|n| {
                let mut args = vec![
                    "--node-id".to_string(),
                    Self::node_id(n.index).to_string(),
                    "--voters".to_string(),
                    voters.clone(),
                ];
                for (key, value) in settings {
                    args.push("--set".into());
                    args.push(format!("{key}={value}"));
                }
                (n.clone(), args)
            })
            .collect();
        let nodes = Node::start_all_in(&specs)?;
        Ok(Self { nodes, net })
    }

    /// The node id of node `index`.
    pub fn node_id(index: usize) -> i32 {
        i32::try_from(index + 1).unwrap_or(i32::MAX)
    }

    /// The index of the node with id `id`.
    pub fn index_of(&self, id: i32) -> anyhow::Result<usize> {
        usize::try_from(id)
            .ok()
            .and_then(|id| id.checked_sub(1))
            .filter(|&index| index < self.nodes.len())
            .with_context(|| format!("no node has id {id}"))
    }

    /// Every node's address, comma-separated, for `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        let addresses: Vec<String> = self.nodes.iter().map(Node::bootstrap).collect();
        addresses.join(",")
    }

    /// The namespaces and the bridge (to cut a node's link).
    pub fn net(&self) -> &Net {
        &self.net
    }

    /// Every partition of every topic as node `index` answers Metadata now.
    pub fn metadata_of(&self, index: usize) -> anyhow::Result<Vec<PartitionView>> {
        let node = self.nodes.get(index).context("no such node")?;
        let config = weir_client::Config {
            connect_timeout: METADATA_IO_TIMEOUT,
            io_timeout: METADATA_IO_TIMEOUT,
            ..weir_client::Config::new("weir-cluster-faults")
        };
        let address = node.bootstrap();
        let mut connection = weir_client::Connection::open(&address, &config)
            .with_context(|| format!("cannot reach {}", node.name()))?;
        let request = kafka_protocol::messages::MetadataRequest::default()
            .with_allow_auto_topic_creation(false)
            .with_topics(None);
        let response = connection
            .send(&request, 12)
            .with_context(|| format!("Metadata of {}", node.name()))?;
        let mut views = Vec::new();
        for topic in response.topics {
            let name = topic.name.map(|n| n.0.to_string()).unwrap_or_default();
            for p in topic.partitions {
                let mut isr: Vec<i32> = p.isr_nodes.iter().map(|b| b.0).collect();
                isr.sort_unstable();
                views.push(PartitionView {
                    topic: name.clone(),
                    partition: p.partition_index,
                    error: p.error_code,
                    leader: p.leader_id.0,
                    leader_epoch: p.leader_epoch,
                    replicas: p.replica_nodes.iter().map(|b| b.0).collect(),
                    isr,
                });
            }
        }
        views.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        Ok(views)
    }

    /// Poll the Metadata of each node in `asked` until `done` holds for
    /// their answers (one per asked node, in order, from one round), or
    /// `timeout` passes (then the last answers are in the error). Returns
    /// the answers.
    pub fn wait_for_metadata(
        &self,
        asked: &[usize],
        timeout: Duration,
        what: &str,
        mut done: impl FnMut(&[Vec<PartitionView>]) -> bool,
    ) -> anyhow::Result<Vec<Vec<PartitionView>>> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut answers = Vec::with_capacity(asked.len());
            let mut last = String::new();
            for &index in asked {
                match self.metadata_of(index) {
                    Ok(views) => {
                        last.push_str(&format!("node {index} answers:\n"));
                        for view in &views {
                            last.push_str(&format!("  {view}\n"));
                        }
                        answers.push(views);
                    }
                    Err(err) => last.push_str(&format!("node {index}: {err:#}\n")),
                }
            }
            if answers.len() == asked.len() && done(&answers) {
                return Ok(answers);
            }
            if Instant::now() > deadline {
                bail!("timed out after {timeout:?} waiting for {what}; last answers:\n{last}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Wait until every node in `asked` answers Metadata with every
    /// partition of every topic led and fully in sync, and all of them give
    /// the same answer (a node that has not applied the latest change must
    /// not pass the check). Returns that answer.
    pub fn wait_for_full_isr(
        &self,
        asked: &[usize],
        timeout: Duration,
    ) -> anyhow::Result<Vec<PartitionView>> {
        let answers =
            self.wait_for_metadata(asked, timeout, "a full ISR everywhere", |answers| {
                answers.iter().all(|views| {
                    !views.is_empty() && views.iter().all(PartitionView::fully_in_sync)
                }) && answers.windows(2).all(|w| w[0] == w[1])
            })?;
        answers.into_iter().next().context("no node was asked")
    }

    /// The node id of the metadata quorum's leader, as the nodes in
    /// `asked` answer DescribeQuorum (each asks the leader it knows). A
    /// leader counts once a majority of `asked` name it with the same
    /// epoch, so a leader that was cut off and has not yet heard of its
    /// successor is not taken for the leader. Asks until then, within
    /// `timeout` (an election may be running).
    pub fn quorum_leader(&self, asked: &[usize], timeout: Duration) -> anyhow::Result<i32> {
        use kafka_protocol::messages::DescribeQuorumRequest;
        use kafka_protocol::messages::describe_quorum_request::{PartitionData, TopicData};
        let config = weir_client::Config {
            connect_timeout: METADATA_IO_TIMEOUT,
            io_timeout: METADATA_IO_TIMEOUT,
            ..weir_client::Config::new("weir-cluster-faults")
        };
        let request = DescribeQuorumRequest::default().with_topics(vec![
            TopicData::default()
                .with_topic_name(kafka_protocol::messages::TopicName(
                    kafka_protocol::protocol::StrBytes::from_static_str("__cluster_metadata"),
                ))
                .with_partitions(vec![PartitionData::default().with_partition_index(0)]),
        ]);
        let deadline = Instant::now() + timeout;
        loop {
            let mut answers = Vec::new();
            let mut named = BTreeMap::<(i32, i32), usize>::new();
            for &index in asked {
                let node = self.nodes.get(index).context("no such node")?;
                let answer = weir_client::Connection::open(&node.bootstrap(), &config)
                    .and_then(|mut connection| connection.send(&request, 2));
                match answer {
                    Ok(response) => {
                        let partition = response
                            .topics
                            .first()
                            .and_then(|t| t.partitions.first())
                            .context("DescribeQuorum answered no partition")?;
                        if partition.error_code == 0 && partition.leader_id.0 >= 0 {
                            *named
                                .entry((partition.leader_id.0, partition.leader_epoch))
                                .or_default() += 1;
                        }
                        answers.push(format!(
                            "{}: error {}, leader {} in epoch {}",
                            node.name(),
                            partition.error_code,
                            partition.leader_id.0,
                            partition.leader_epoch
                        ));
                    }
                    Err(err) => answers.push(format!("{}: {err}", node.name())),
                }
            }
            if let Some(((leader, _), _)) = named.iter().find(|(_, n)| **n > asked.len() / 2) {
                return Ok(*leader);
            }
            if Instant::now() > deadline {
                bail!(
                    "no node led the metadata quorum within {timeout:?}; last answers:\n{}",
                    answers.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The seed of this run: `WEIR_FAULT_SEED` if set, else a random one. Printed
/// either way, so any run can be replayed.
pub fn fault_seed() -> anyhow::Result<u64> {
    let seed = match std::env::var(SEED_ENV) {
        Ok(text) => text
            .trim()
            .parse()
            .with_context(|| format!("{SEED_ENV}={text:?} is not a u64"))?,
        Err(_) => rand::random(),
    };
    eprintln!("fault schedule seed: {SEED_ENV}={seed}");
    Ok(seed)
}

/// One fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// SIGKILL the node, then restart it on the same address and data.
    KillRestart,
    /// SIGSTOP the node, SIGCONT it after this long.
    Stop(Duration),
    /// Take the node's link down, bring it up after this long.
    LinkDown(Duration),
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::KillRestart => write!(f, "SIGKILL + restart"),
            Self::Stop(d) => write!(f, "SIGSTOP for {} ms, SIGCONT", d.as_millis()),
            Self::LinkDown(d) => write!(f, "link down for {} ms, up", d.as_millis()),
        }
    }
}

/// A kind of fault a [`Plan`] draws from (hold times are drawn separately).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// [`Fault::KillRestart`].
    KillRestart,
    /// [`Fault::Stop`].
    Stop,
    /// [`Fault::LinkDown`].
    LinkDown,
}

/// A fault planned at an offset from the start of the schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Planned {
    /// When, from the start of [`Schedule::run`].
    pub at: Duration,
    /// What.
    pub fault: Fault,
    /// On which node (an index into the nodes given to `run`).
    pub node: usize,
}

/// What a fault generator may choose from, and how densely.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Faults to inject.
    pub count: usize,
    /// Nodes to pick from (`0..nodes`).
    pub nodes: usize,
    /// Offset of the first fault, at least.
    pub first_at: Duration,
    /// Gap between the end of one fault and the start of the next: at least, at most.
    pub gap_min: Duration,
    /// See `gap_min`.
    pub gap_max: Duration,
    /// The kinds of faults to draw from; how long a stop or a cut link
    /// holds is drawn from `hold_min..=hold_max`.
    pub kinds: Vec<FaultKind>,
    /// Shortest hold of a stop or a cut link.
    pub hold_min: Duration,
    /// Longest hold of a stop or a cut link.
    pub hold_max: Duration,
}

/// Faults generated from a seed, and the record of what was applied when.
///
/// A schedule is either planned up front ([`Schedule::generate`], applied
/// by [`Schedule::run`]) or adaptive ([`Schedule::adaptive`]): the test
/// picks each fault as it goes (the leader of a partition *now*), drawing
/// every choice from the schedule so that the seed replays it, and records
/// each fault with [`Schedule::begin`].
#[derive(Debug, Clone)]
pub struct Schedule {
    seed: u64,
    planned: Vec<Planned>,
    applied: Vec<(Duration, String)>,
    /// Draws after the plan (adaptive choices), from the same seed.
    rng: StdRng,
    /// Where the offsets in the report count from.
    start: Instant,
}

impl Schedule {
    /// Draw `plan.count` faults from `seed`: the same seed gives the same schedule.
    pub fn generate(seed: u64, plan: &Plan) -> Self {
        assert!(plan.nodes > 0 && !plan.kinds.is_empty(), "an empty plan");
        assert!(plan.gap_min <= plan.gap_max && plan.hold_min <= plan.hold_max);
        let mut rng = StdRng::seed_from_u64(seed);
        let mut at = plan.first_at;
        let mut planned = Vec::with_capacity(plan.count);
        for _ in 0..plan.count {
            let kind = plan.kinds[rng.random_range(0..plan.kinds.len())];
            let hold = Duration::from_millis(
                rng.random_range(millis(plan.hold_min)..=millis(plan.hold_max)),
            );
            let fault = match kind {
                FaultKind::KillRestart => Fault::KillRestart,
                FaultKind::Stop => Fault::Stop(hold),
                FaultKind::LinkDown => Fault::LinkDown(hold),
            };
            let node = rng.random_range(0..plan.nodes);
            planned.push(Planned { at, fault, node });
            let gap = rng.random_range(millis(plan.gap_min)..=millis(plan.gap_max));
            let held = match fault {
                Fault::KillRestart => Duration::ZERO,
                Fault::Stop(d) | Fault::LinkDown(d) => d,
            };
            at += held + Duration::from_millis(gap);
        }
        Self {
            seed,
            planned,
            applied: Vec::new(),
            rng,
            start: Instant::now(),
        }
    }

    /// An adaptive schedule: no faults planned; the test draws its choices
    /// with [`Schedule::pick`], [`Schedule::draw`] and
    /// [`Schedule::shuffled`] and records each fault with [`Schedule::begin`].
    pub fn adaptive(seed: u64) -> Self {
        Self {
            seed,
            planned: Vec::new(),
            applied: Vec::new(),
            rng: StdRng::seed_from_u64(seed),
            start: Instant::now(),
        }
    }

    /// A number in `0..n` (`n` > 0).
    pub fn pick(&mut self, n: usize) -> usize {
        assert!(n > 0, "a pick among nothing");
        self.rng.random_range(0..n)
    }

    /// A duration in `min..=max`, whole milliseconds.
    pub fn draw(&mut self, min: Duration, max: Duration) -> Duration {
        assert!(min <= max, "an empty range {min:?}..={max:?}");
        Duration::from_millis(self.rng.random_range(millis(min)..=millis(max)))
    }

    /// `0..n` in a drawn order.
    pub fn shuffled(&mut self, n: usize) -> Vec<usize> {
        let mut order: Vec<usize> = (0..n).collect();
        // Fisher-Yates, drawn from the schedule's own generator.
        for i in (1..n).rev() {
            let j = self.rng.random_range(0..=i);
            order.swap(i, j);
        }
        order
    }

    /// Record that the fault `what` begins now.
    pub fn begin(&mut self, what: impl Into<String>) {
        self.applied.push((self.start.elapsed(), what.into()));
    }

    /// Add `note` to the last fault recorded (how it ended, what it hit).
    pub fn note(&mut self, note: impl AsRef<str>) {
        let at = self.start.elapsed().as_secs_f64();
        if let Some((_, what)) = self.applied.last_mut() {
            what.push_str(&format!(" ({} at {at:.3}s)", note.as_ref()));
        }
    }

    /// The seed it was drawn from.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The faults, in order.
    pub fn planned(&self) -> &[Planned] {
        &self.planned
    }

    /// Apply every fault at its offset from now, to `nodes[planned.node]`
    /// (`net` cuts links). `between` runs after each fault with its index
    /// (to check progress or record state); an error from it or from a
    /// fault stops the schedule.
    pub fn run(
        &mut self,
        nodes: &mut [Node],
        net: Option<&Net>,
        mut between: impl FnMut(usize) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        self.start = Instant::now();
        let start = self.start;
        for (index, planned) in self.planned.clone().into_iter().enumerate() {
            // Sleeping here schedules the fault; it waits for no condition.
            if let Some(wait) = planned.at.checked_sub(start.elapsed()) {
                std::thread::sleep(wait);
            }
            let node = nodes.get_mut(planned.node).with_context(|| {
                format!(
                    "the schedule names node {}, which is not given",
                    planned.node
                )
            })?;
            let began = start.elapsed();
            self.applied
                .push((began, format!("{} on node {}", planned.fault, planned.node)));
            match planned.fault {
                Fault::KillRestart => {
                    node.sigkill()?;
                    node.restart()?;
                }
                Fault::Stop(hold) => {
                    node.sigstop()?;
                    std::thread::sleep(hold);
                    node.sigcont()?;
                }
                Fault::LinkDown(hold) => {
                    let net = net.context("a link fault needs the Net")?;
                    let node_net = node
                        .net()
                        .with_context(|| format!("node {} has no namespace", planned.node))?
                        .clone();
                    net.link_down(&node_net)?;
                    std::thread::sleep(hold);
                    net.link_up(&node_net)?;
                }
            }
            if let Some((_, what)) = self.applied.last_mut() {
                what.push_str(&format!(" (done at {:.3}s)", start.elapsed().as_secs_f64()));
            }
            between(index)?;
        }
        Ok(())
    }

    /// How to replay this run, and the faults actually applied so far.
    pub fn report(&self) -> String {
        let mut text = format!("replay with {SEED_ENV}={}\nfaults applied:\n", self.seed);
        if self.applied.is_empty() {
            text.push_str("  (none)\n");
        }
        for (at, what) in &self.applied {
            text.push_str(&format!("  +{:.3}s {what}\n", at.as_secs_f64()));
        }
        text
    }

    /// `result`, with the replay report attached to an error.
    pub fn explain<T>(&self, result: anyhow::Result<T>) -> anyhow::Result<T> {
        result.map_err(|err| err.context(self.report()))
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
