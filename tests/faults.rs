//! Fault tests (run as root): `weir serve` in its own network namespace,
//! idempotent acks=all producers (rdkafka) running while a seeded schedule of
//! faults hits the broker (SIGKILL and restart, a cut link, SIGSTOP and
//! SIGCONT), then a read_committed consumer reads everything back and the
//! history checker (tests/common/history.rs) verifies that every
//! acknowledged record is read exactly once at its offset and nothing else
//! went wrong. A failure prints `replay with WEIR_FAULT_SEED=<seed>` and the
//! faults applied. The harness itself (namespaces, cleanup) is tested here too.
//!
//! Today this is one node; the replicated cluster's fault suite will start
//! three `Node`s in one `Net` with `--node-id`, `--controller-listen` and
//! `--voters`, and reuse the rest.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use kafka_protocol::messages::ApiVersionsRequest;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use common::faults::{FaultKind, Node, Plan, Schedule, fault_seed};
use common::history::History;
use common::netns::{self, Net};
use common::raw::RawClient;

const TOPIC: &str = "faults";
const PARTITIONS: i32 = 3;
/// Producer threads of a workload.
const PRODUCERS: usize = 2;
/// Records one producer sends per second at most (paces the run so records
/// are in flight during every fault).
const RECORDS_PER_SECOND_MAX: u64 = 400;
/// Records one producer sends in all, at most.
const RECORDS_PER_PRODUCER_MAX: u64 = 20_000;
/// Longest a workload's producers may run (a bound; the schedule ends them sooner).
const PRODUCE_TIME_MAX: Duration = Duration::from_secs(60);
/// How long producers may take to deliver what they hold when told to stop.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(60);
/// Generous, so the idempotent producer rides out every fault injected here.
const MESSAGE_TIMEOUT_MS: &str = "60000";
/// Records librdkafka may hold unsent per producer.
const QUEUED_RECORDS_MAX: &str = "2000";
/// How long reading everything back may take.
const READ_TIMEOUT: Duration = Duration::from_secs(60);
/// How long acknowledgements may take to resume after a fault ends.
const RESUME_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a commit of group offsets may take to become readable.
const COMMITTED_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the group consumer commits its position.
const COMMIT_INTERVAL: Duration = Duration::from_millis(200);

/// The payload of record `id`.
fn payload(id: u64) -> String {
    format!("fault-{id}")
}

/// The id in a payload written by [`payload`].
fn id_of(payload: Option<&[u8]>) -> Option<u64> {
    std::str::from_utf8(payload?)
        .ok()?
        .strip_prefix("fault-")?
        .parse()
        .ok()
}

/// The shared history, even if a thread panicked while holding it.
fn lock(history: &Mutex<History>) -> MutexGuard<'_, History> {
    history
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A producer context that writes every delivery report into the history.
struct Recorder {
    history: Arc<Mutex<History>>,
}

impl ClientContext for Recorder {}

impl ProducerContext for Recorder {
    type DeliveryOpaque = Box<u64>;

    fn delivery(&self, result: &DeliveryResult<'_>, id: Self::DeliveryOpaque) {
        let mut history = lock(&self.history);
        match result {
            Ok(message) => history.acked(*id, message.partition(), message.offset()),
            Err((err, _)) => history.maybe(*id, err.to_string()),
        }
    }
}

/// Producers sending paced, numbered records into a shared history until stopped.
struct Workload {
    history: Arc<Mutex<History>>,
    stop: Arc<AtomicBool>,
    producers: Vec<JoinHandle<anyhow::Result<()>>>,
}

impl Workload {
    fn start(bootstrap: &str) -> anyhow::Result<Self> {
        let history = Arc::new(Mutex::new(History::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let next_id = Arc::new(AtomicU64::new(0));
        let mut producers = Vec::new();
        for _ in 0..PRODUCERS {
            let mut config = common::producer_config(bootstrap);
            config
                .set("enable.idempotence", "true")
                .set("acks", "all")
                .set("message.timeout.ms", MESSAGE_TIMEOUT_MS)
                .set("queue.buffering.max.messages", QUEUED_RECORDS_MAX);
            let producer: BaseProducer<Recorder> = config
                .create_with_context(Recorder {
                    history: history.clone(),
                })
                .context("cannot create a producer")?;
            let (history, stop, next_id) = (history.clone(), stop.clone(), next_id.clone());
            producers.push(std::thread::spawn(move || {
                produce(&producer, &history, &stop, &next_id)
            }));
        }
        Ok(Self {
            history,
            stop,
            producers,
        })
    }

    fn acked(&self) -> usize {
        lock(&self.history).acked_count()
    }

    /// Wait until more than `before` records are acknowledged (producers carry on).
    fn wait_for_acks_above(&self, before: usize) -> anyhow::Result<()> {
        common::wait_until(RESUME_TIMEOUT, "acknowledgements to resume", || {
            if self.producers.iter().any(JoinHandle::is_finished) {
                bail!("a producer stopped early");
            }
            Ok(self.acked() > before)
        })
    }

    /// Stop and flush the producers; the history of everything they sent.
    fn finish(self) -> anyhow::Result<Arc<Mutex<History>>> {
        self.stop.store(true, Ordering::SeqCst);
        for producer in self.producers {
            producer
                .join()
                .map_err(|_| anyhow::anyhow!("a producer thread panicked"))??;
        }
        Ok(self.history)
    }
}

/// Send paced records until `stop`, then flush. A record whose send is
/// refused outright is not recorded; one handed to librdkafka is "sent".
fn produce(
    producer: &BaseProducer<Recorder>,
    history: &Mutex<History>,
    stop: &AtomicBool,
    next_id: &AtomicU64,
) -> anyhow::Result<()> {
    let start = Instant::now();
    let mut sent = 0u64;
    while !stop.load(Ordering::SeqCst)
        && sent < RECORDS_PER_PRODUCER_MAX
        && start.elapsed() < PRODUCE_TIME_MAX
    {
        if let Some((code, reason)) = producer.client().fatal_error() {
            bail!("the idempotent producer hit a fatal error: {code:?}: {reason}");
        }
        let allowed = u64::try_from(start.elapsed().as_millis())? * RECORDS_PER_SECOND_MAX / 1000;
        if sent >= allowed {
            producer.poll(Duration::from_millis(5));
            continue;
        }
        let id = next_id.fetch_add(1, Ordering::SeqCst);
        let partition = i32::try_from(id % u64::try_from(PARTITIONS)?)?;
        let value = payload(id);
        lock(history).sent(id);
        let mut record: BaseRecord<'_, [u8], [u8], Box<u64>> =
            BaseRecord::with_opaque_to(TOPIC, Box::new(id))
                .partition(partition)
                .payload(value.as_bytes());
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((
                    rdkafka::error::KafkaError::MessageProduction(
                        rdkafka::types::RDKafkaErrorCode::QueueFull,
                    ),
                    back,
                )) if !stop.load(Ordering::SeqCst) => {
                    record = back;
                    producer.poll(Duration::from_millis(10));
                }
                Err((err, _)) => {
                    lock(history).maybe(id, format!("send refused: {err}"));
                    break;
                }
            }
        }
        sent += 1;
        producer.poll(Duration::ZERO);
    }
    // Records still unreported after the flush stay "maybe".
    let _ = producer.flush(FLUSH_TIMEOUT);
    if let Some((code, reason)) = producer.client().fatal_error() {
        bail!("the idempotent producer hit a fatal error: {code:?}: {reason}");
    }
    Ok(())
}

/// Read every partition from the start up to its high watermark with a
/// read_committed consumer, recording each record and the watermarks seen
/// before and after.
fn read_everything(bootstrap: &str, history: &Mutex<History>) -> anyhow::Result<()> {
    let mut config = common::consumer_config(bootstrap);
    config.set("isolation.level", "read_committed");
    let consumer: BaseConsumer = config.create()?;
    let mut assignment = TopicPartitionList::new();
    let mut ends = HashMap::new();
    for p in 0..PARTITIONS {
        let (_, high) = consumer
            .fetch_watermarks(TOPIC, p, common::CLIENT_TIMEOUT)
            .with_context(|| format!("cannot list offsets of {TOPIC}/{p}"))?;
        ends.insert(p, high);
        assignment.add_partition_offset(TOPIC, p, Offset::Beginning)?;
    }
    consumer.assign(&assignment)?;
    let mut next: HashMap<i32, i64> = HashMap::new();
    let done = |next: &HashMap<i32, i64>| {
        ends.iter()
            .all(|(p, end)| next.get(p).copied().unwrap_or(0) >= *end)
    };
    let deadline = Instant::now() + READ_TIMEOUT;
    while !done(&next) {
        if Instant::now() > deadline {
            bail!("reading back timed out: next offsets {next:?}, wanted {ends:?}");
        }
        match consumer.poll(Duration::from_millis(200)) {
            None => {}
            Some(Err(err)) => bail!("consumer error: {err}"),
            Some(Ok(message)) => {
                next.insert(message.partition(), message.offset() + 1);
                lock(history).read(
                    message.partition(),
                    message.offset(),
                    id_of(message.payload()),
                );
            }
        }
    }
    for p in 0..PARTITIONS {
        let (_, high) = consumer
            .fetch_watermarks(TOPIC, p, common::CLIENT_TIMEOUT)
            .with_context(|| format!("cannot list offsets of {TOPIC}/{p}"))?;
        lock(history).high_watermark(p, high);
    }
    Ok(())
}

/// Read everything back and run the checker; the report on failure.
fn check(bootstrap: &str, history: &Mutex<History>) -> anyhow::Result<()> {
    read_everything(bootstrap, history)?;
    let history = lock(history);
    match history.check() {
        Ok(summary) => {
            eprintln!("history: {summary}");
            if summary.acked == 0 {
                bail!("nothing was acknowledged: the test proved nothing");
            }
            Ok(())
        }
        Err(violations) => bail!("{violations}"),
    }
}

/// One namespace, one node with a short group rebalance delay, the topic created.
fn start_node() -> anyhow::Result<(Net, Node)> {
    let mut net = Net::new()?;
    let node_net = net.add_node()?;
    let node = Node::start_in(&node_net, &["--set", "group.initial.rebalance.delay.ms=0"])?;
    common::create_topic_blocking(&node.bootstrap(), TOPIC, PARTITIONS, &[])?;
    Ok((net, node))
}

/// Group offsets a consumer commits while the faults run: the last offsets
/// whose commit was acknowledged, per partition.
struct GroupCommits {
    committed: Arc<Mutex<BTreeMap<i32, i64>>>,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<anyhow::Result<usize>>,
}

const GROUP: &str = "fault-group";

impl GroupCommits {
    fn start(bootstrap: &str) -> anyhow::Result<Self> {
        let mut config = group_config(bootstrap);
        config.set("session.timeout.ms", "6000");
        let consumer: BaseConsumer = config.create()?;
        consumer.subscribe(&[TOPIC])?;
        let committed = Arc::new(Mutex::new(BTreeMap::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (committed, stop) = (committed.clone(), stop.clone());
            std::thread::spawn(move || commit_while_consuming(&consumer, &committed, &stop))
        };
        Ok(Self {
            committed,
            stop,
            thread,
        })
    }

    /// The offsets whose commit was acknowledged so far.
    fn acknowledged(&self) -> BTreeMap<i32, i64> {
        self.committed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Stop; how many commits were acknowledged.
    fn finish(self) -> anyhow::Result<usize> {
        self.stop.store(true, Ordering::SeqCst);
        self.thread
            .join()
            .map_err(|_| anyhow::anyhow!("the group consumer thread panicked"))?
    }
}

fn group_config(bootstrap: &str) -> ClientConfig {
    let mut config = common::consumer_config(bootstrap);
    config
        .set("group.id", GROUP)
        .set("isolation.level", "read_committed");
    config
}

/// Consume and commit the position every [`COMMIT_INTERVAL`] until `stop`;
/// a commit that fails (the broker is down) is simply retried later.
fn commit_while_consuming(
    consumer: &BaseConsumer,
    committed: &Mutex<BTreeMap<i32, i64>>,
    stop: &AtomicBool,
) -> anyhow::Result<usize> {
    let mut position: BTreeMap<i32, i64> = BTreeMap::new();
    let mut last_commit = Instant::now();
    let mut commits = 0;
    let start = Instant::now();
    while !stop.load(Ordering::SeqCst) && start.elapsed() < PRODUCE_TIME_MAX * 2 {
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(100)) {
            position.insert(message.partition(), message.offset() + 1);
        }
        if last_commit.elapsed() < COMMIT_INTERVAL || position.is_empty() {
            continue;
        }
        last_commit = Instant::now();
        let mut offsets = TopicPartitionList::new();
        for (&p, &o) in &position {
            offsets.add_partition_offset(TOPIC, p, Offset::Offset(o))?;
        }
        if consumer.commit(&offsets, CommitMode::Sync).is_ok() {
            commits += 1;
            *committed
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = position.clone();
        }
    }
    Ok(commits)
}

/// Check that the group's committed offsets, as the broker answers them
/// now, are at least the acknowledged ones (`want`).
fn assert_committed_at_least(
    bootstrap: &str,
    want: &BTreeMap<i32, i64>,
    when: &str,
) -> anyhow::Result<()> {
    let consumer: BaseConsumer = group_config(bootstrap).create()?;
    let mut partitions = TopicPartitionList::new();
    for &p in want.keys() {
        partitions.add_partition(TOPIC, p);
    }
    let mut last = String::new();
    common::wait_until(COMMITTED_TIMEOUT, "the group's committed offsets", || {
        let got = match consumer.committed_offsets(partitions.clone(), common::CLIENT_TIMEOUT) {
            Ok(got) => got,
            // The coordinator may be loading after a restart; ask again.
            Err(err) => {
                last = err.to_string();
                return Ok(false);
            }
        };
        for (&p, &offset) in want {
            let answer = got
                .find_partition(TOPIC, p)
                .map(|e| e.offset())
                .unwrap_or(Offset::Invalid);
            match answer {
                Offset::Offset(o) if o >= offset => {}
                other => bail!(
                    "{when}: partition {p}'s committed offset is {other:?}, but {offset} was acknowledged"
                ),
            }
        }
        Ok(true)
    })
    .with_context(|| format!("{when} (last error: {last})"))
}

#[test]
fn acked_records_and_group_offsets_survive_repeated_sigkill() -> anyhow::Result<()> {
    let seed = fault_seed()?;
    let mut schedule = Schedule::generate(
        seed,
        &Plan {
            count: 5,
            nodes: 1,
            first_at: Duration::from_millis(1000),
            gap_min: Duration::from_millis(500),
            gap_max: Duration::from_millis(1500),
            kinds: vec![FaultKind::KillRestart],
            hold_min: Duration::ZERO,
            hold_max: Duration::ZERO,
        },
    );
    let (_net, node) = start_node()?;
    let bootstrap = node.bootstrap();
    let mut nodes = [node];
    let result = (|| {
        let workload = Workload::start(&bootstrap)?;
        let group = GroupCommits::start(&bootstrap)?;
        // The commits acknowledged before each kill must survive it.
        let mut before_kill = group.acknowledged();
        let mut kills_with_commits = 0;
        schedule.run(&mut nodes, None, |kill| {
            let when = format!("after kill {}", kill + 1);
            assert_committed_at_least(&bootstrap, &before_kill, &when)?;
            if !before_kill.is_empty() {
                kills_with_commits += 1;
            }
            before_kill = group.acknowledged();
            Ok(())
        })?;
        workload.wait_for_acks_above(workload.acked())?;
        let commits = group.finish()?;
        let history = workload.finish()?;
        eprintln!(
            "group: {commits} commits, {kills_with_commits} kills checked with commits before them"
        );
        if kills_with_commits == 0 {
            bail!(
                "no kill came after an acknowledged commit ({commits} commits): the offsets check proved nothing"
            );
        }
        check(&bootstrap, &history)
    })();
    schedule.explain(result)
}

#[test]
fn acked_records_survive_a_cut_link() -> anyhow::Result<()> {
    let seed = fault_seed()?;
    let mut schedule = Schedule::generate(
        seed,
        &Plan {
            count: 1,
            nodes: 1,
            first_at: Duration::from_millis(1000),
            gap_min: Duration::ZERO,
            gap_max: Duration::ZERO,
            kinds: vec![FaultKind::LinkDown],
            hold_min: Duration::from_millis(2000),
            hold_max: Duration::from_millis(4000),
        },
    );
    let (net, node) = start_node()?;
    let bootstrap = node.bootstrap();
    let mut nodes = [node];
    let result = (|| {
        let workload = Workload::start(&bootstrap)?;
        schedule.run(&mut nodes, Some(&net), |_| Ok(()))?;
        // Producers carry on once the link is back.
        workload.wait_for_acks_above(workload.acked())?;
        let history = workload.finish()?;
        check(&bootstrap, &history)
    })();
    schedule.explain(result)
}

#[test]
fn acked_records_survive_sigstop_and_sigcont() -> anyhow::Result<()> {
    let seed = fault_seed()?;
    let mut schedule = Schedule::generate(
        seed,
        &Plan {
            count: 3,
            nodes: 1,
            first_at: Duration::from_millis(1000),
            gap_min: Duration::from_millis(500),
            gap_max: Duration::from_millis(1000),
            kinds: vec![FaultKind::Stop],
            hold_min: Duration::from_millis(1000),
            hold_max: Duration::from_millis(2500),
        },
    );
    let (_net, node) = start_node()?;
    let bootstrap = node.bootstrap();
    let mut nodes = [node];
    let result = (|| {
        let workload = Workload::start(&bootstrap)?;
        schedule.run(&mut nodes, None, |_| Ok(()))?;
        workload.wait_for_acks_above(workload.acked())?;
        let history = workload.finish()?;
        check(&bootstrap, &history)
    })();
    schedule.explain(result)
}

#[test]
fn the_same_seed_gives_the_same_schedule() {
    let plan = Plan {
        count: 8,
        nodes: 3,
        first_at: Duration::from_millis(100),
        gap_min: Duration::from_millis(10),
        gap_max: Duration::from_millis(900),
        kinds: vec![FaultKind::KillRestart, FaultKind::Stop, FaultKind::LinkDown],
        hold_min: Duration::from_millis(100),
        hold_max: Duration::from_millis(3000),
    };
    let a = Schedule::generate(42, &plan);
    assert_eq!(a.planned(), Schedule::generate(42, &plan).planned());
    assert_ne!(a.planned(), Schedule::generate(43, &plan).planned());
    assert_eq!(a.planned().len(), 8);
    assert!(a.planned().windows(2).all(|w| w[0].at < w[1].at));
    assert!(a.planned().iter().all(|p| p.node < 3));
    assert!(a.report().contains("replay with WEIR_FAULT_SEED=42"));
}

/// A client in the root namespace reaches a node through the bridge, a
/// node reaches another node, and a cut link stalls connections (new ones
/// time out rather than being refused; an open one gets no answer) until
/// the link is back.
#[test]
fn nodes_are_reachable_and_a_cut_link_stalls() -> anyhow::Result<()> {
    let mut net = Net::new()?;
    let a = net.add_node()?;
    let b = net.add_node()?;
    let node = Node::start_in(&a, &[])?;
    let bootstrap = node.bootstrap();
    let config = weir_client::Config {
        io_timeout: Duration::from_millis(1500),
        ..weir_client::Config::default()
    };
    let mut open = RawClient::connect_with(&bootstrap, &config)?;
    open.call(&ApiVersionsRequest::default(), 0)?;

    // From node b's namespace, through the bridge, to node a.
    let from_b = net
        .command(&b, env!("CARGO_BIN_EXE_weir"))
        .args(["--brokers", &bootstrap, "topic", "list"])
        .output()?;
    if !from_b.status.success() {
        bail!(
            "node b cannot reach node a ({}): {}\n(if br_netfilter drops bridged traffic, \
             check `sysctl net.bridge.bridge-nf-call-iptables` and the FORWARD chain)",
            from_b.status,
            String::from_utf8_lossy(&from_b.stderr)
        );
    }

    net.link_down(&a)?;
    let address: SocketAddr = bootstrap.parse()?;
    match TcpStream::connect_timeout(&address, Duration::from_millis(1500)) {
        Ok(_) => bail!("connected to {bootstrap} through a cut link"),
        Err(err) if err.kind() == std::io::ErrorKind::ConnectionRefused => {
            bail!("a cut link refused the connection instead of stalling it")
        }
        Err(_) => {}
    }
    open.send_frame(&RawClient::encode(&ApiVersionsRequest::default(), 0, 7)?)?;
    match open.read_frame() {
        Ok(Some(_)) => bail!("an answer came through a cut link"),
        Ok(None) => bail!("the open connection was closed instead of stalling"),
        Err(_) => {} // The read timed out: the connection stalls.
    }

    net.link_up(&a)?;
    // The stalled request's answer arrives once TCP retransmits.
    common::wait_until(Duration::from_secs(30), "the stalled answer", || {
        Ok(matches!(open.read_frame(), Ok(Some(_))))
    })?;
    RawClient::connect(&bootstrap)?.call(&ApiVersionsRequest::default(), 0)?;
    Ok(())
}

/// Everything a `Net` made is removed when it is dropped during a panic,
/// and a crashed run's leftovers are removed by the next `Net`.
#[test]
fn nets_are_removed_after_a_panic_and_after_a_crash() -> anyhow::Result<()> {
    let names = Arc::new(Mutex::new(None));
    let unwound = std::panic::catch_unwind({
        let names = names.clone();
        move || {
            let mut net = Net::new().expect("a Net");
            let node = net.add_node().expect("a node");
            *names.lock().unwrap_or_else(|e| e.into_inner()) =
                Some((net.bridge().to_string(), node.ns.clone()));
            panic!("a test failing while it holds a Net");
        }
    });
    assert!(unwound.is_err());
    let (bridge, ns) = names
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
        .context("the Net was not made")?;
    assert!(!netns::link_exists(&bridge), "{bridge} outlived its Net");
    assert!(!netns::ns_exists(&ns), "{ns} outlived its Net");

    // A crashed run: a claim held by a process that is gone, with its
    // bridge, its namespace and a process in it still there. The claim is
    // written last, so no other test's sweep sees it half-staged.
    let mut dead = std::process::Command::new("true").spawn()?;
    dead.wait()?;
    let dead_pid = dead.id();
    let index = netns::SUBNETS_MAX - 1 - std::process::id() % 64;
    let claim = netns::claim_path(index);
    let (bridge, ns) = (netns::bridge_name(index), netns::ns_name(index, 0));
    if std::fs::read_to_string(&claim).is_ok() {
        bail!("subnet {index} is claimed already; cannot stage a leftover");
    }
    for args in [
        vec!["link", "add", bridge.as_str(), "type", "bridge"],
        vec!["netns", "add", ns.as_str()],
    ] {
        let status = std::process::Command::new("ip").args(&args).status()?;
        if !status.success() {
            bail!("cannot stage a leftover: ip {args:?}: {status}");
        }
    }
    let mut orphan = std::process::Command::new("ip")
        .args(["netns", "exec", &ns, "sleep", "600"])
        .spawn()?;
    std::fs::create_dir_all(netns::CLAIMS_DIR)?;
    std::fs::write(&claim, dead_pid.to_string())?;

    let net = Net::new()?;
    let claim_now = std::fs::read_to_string(&claim).unwrap_or_default();
    if claim_now.trim() == dead_pid.to_string() {
        let _ = orphan.kill();
        bail!("the dead run's claim {} survived", claim.display());
    }
    // Unless a live Net took the index over since, its names are gone.
    if claim_now.is_empty() {
        assert!(!netns::link_exists(&bridge), "leftover {bridge} survived");
        assert!(!netns::ns_exists(&ns), "leftover {ns} survived");
    }
    let killed = common::wait_until(
        Duration::from_secs(10),
        "the leftover namespace's process to be killed",
        || Ok(orphan.try_wait()?.is_some()),
    );
    if killed.is_err() {
        let _ = orphan.kill();
        let _ = orphan.wait();
    }
    killed?;
    drop(net);
    Ok(())
}
