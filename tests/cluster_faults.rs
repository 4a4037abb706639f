//! The replicated cluster's fault suite (issue 9; run as root): three
//! `weir serve` nodes, each in its own network namespace joined by a veth
//! pair to a bridge, every one a voter of the metadata quorum and a broker.
//! A topic with replication factor 3 and `min.insync.replicas=2` takes
//! records from idempotent acks=all rdkafka producers while a read_committed
//! consumer group consumes and commits, and one kind of fault at a time
//! hits the cluster:
//!
//! 1. SIGKILL the leader of a produced partition (found through Metadata),
//!    then restart it; ten times (`WEIR_SOAK_KILLS=N` makes it N: the soak,
//!    `scripts/soak-cluster.sh`). Each kill prints its failover time, from
//!    the SIGKILL to the first acks=all produce acknowledged on a partition
//!    the killed node led.
//! 2. SIGSTOP a follower until it has left the ISR (by lag: the session
//!    timeout is set longer than the stop), then SIGCONT it.
//! 3. A rolling restart: SIGTERM each node, wait for it to exit, start it
//!    again, wait for a full ISR before the next.
//! 4. A network partition: the link of a partition's leader goes down. It
//!    must stop acknowledging acks=all writes (a producer inside its
//!    namespace, the only client that still reaches it, must still be
//!    waiting for its acknowledgement when the link comes back) and the
//!    majority elects a new leader. After healing, leadership is moved back to it, so the final
//!    read goes through its log: a divergent tail would show there.
//! 5. The link of every node in turn, which includes the metadata quorum's
//!    leader (recorded before each cut; if the leadership moved so that no
//!    cut hit it, its link is cut too). A topic created through the
//!    majority during each cut must be known to every node afterwards.
//!
//! After each fault the cluster must come back, within a bounded time, to a
//! full ISR on which every node agrees, the group's acknowledged commits
//! must have survived (the committed offsets read back are no lower, and
//! the group member was never moved back below one: a lost commit or an
//! offset reset would do that), and producers must be acknowledged again. At the end
//! of each test the producers stop, a read_committed consumer reads
//! everything back, and the history checker (tests/common/history.rs)
//! verifies that every acknowledged record is read exactly once, at its
//! acknowledged offset, in order per partition, and nothing above the high
//! watermark. Every choice (which partition, which follower, gaps, holds,
//! orders) is drawn from the seed; a failure prints
//! `replay with WEIR_FAULT_SEED=<seed>` and the faults applied.
//!
//! The tests take one lock, so one cluster runs at a time: three debug
//! brokers already share this machine's cores, and the broker session
//! timeout is 1.5 s.

mod common;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::process::{Child, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rdkafka::admin::{NewTopic, TopicReplication};

use common::faults::{Cluster, PartitionView, Schedule, fault_seed};
use common::workload::{
    GroupCommits, Spec, Workload, assert_committed_at_least, finish_and_check, lock, payload,
};

const TOPIC: &str = "cluster-faults";
const PARTITIONS: i32 = 3;
const NODES: usize = 3;
const REPLICATION: i32 = 3;
/// Every node's broker settings. The lag time is short to keep CI short;
/// few `__consumer_offsets` partitions keep three debug brokers light.
const SETTINGS: &[(&str, &str)] = &[
    ("replica.lag.time.max.ms", "2000"),
    ("min.insync.replicas", "2"),
    ("group.initial.rebalance.delay.ms", "0"),
    ("offsets.topic.num.partitions", "3"),
];
/// The SIGSTOP test's session timeout: longer than a stop lasts, so the
/// stopped follower leaves the ISR by lagging, not by being fenced.
const STOP_SESSION_TIMEOUT_MS: &str = "10000";
/// How long a stopped follower may take to leave the ISR: the lag time
/// (2 s) and the leader's check, well under [`STOP_SESSION_TIMEOUT_MS`].
const LEAVE_ISR_TIMEOUT: Duration = Duration::from_secs(8);

/// The load: two producers of at most 150 records a second each, riding
/// out every fault injected here (2-minute message timeouts; a produce
/// request to a node behind a cut link is given up, and retried
/// elsewhere, after 10 s).
const SPEC: Spec = Spec {
    topic: TOPIC,
    partitions: PARTITIONS,
    group: "cluster-faults-group",
    producers: 2,
    records_per_second_max: 150,
    records_per_producer_max: u64::MAX,
    message_timeout_ms: "120000",
    request_timeout_ms: Some("10000"),
    queued_records_max: "5000",
    flush_timeout: Duration::from_secs(120),
    resume_timeout: Duration::from_secs(30),
    committed_timeout: Duration::from_secs(30),
    read_timeout: Duration::from_secs(120),
    commit_interval: Duration::from_millis(200),
};
/// How long a test's producers may run, at most, besides the leader kills.
const PRODUCE_TIME_MAX: Duration = Duration::from_secs(300);

/// How long acks=all produce may take to resume after a leader's SIGKILL.
const FAILOVER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the cluster may take to return to a full ISR after a fault.
const FULL_ISR_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the majority may take to move a cut-off node's leaderships.
const MOVE_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the metadata quorum may take to have a leader.
const QUORUM_LEADER_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the producer pinned to a cut-off leader may take to exit after
/// the heal (its own message timeout is 30 s, its flush 10 s more).
const PINNED_EXIT_TIMEOUT: Duration = Duration::from_secs(60);
/// The gap of traffic between the end of one fault and the next: at least, at most.
const GAP_MIN: Duration = Duration::from_millis(300);
const GAP_MAX: Duration = Duration::from_millis(1500);

/// Leader kills in CI.
const LEADER_KILLS: usize = 10;
/// The environment variable that sets the number of leader kills (the soak).
const SOAK_KILLS_ENV: &str = "WEIR_SOAK_KILLS";
/// The most kills a soak may ask for.
const SOAK_KILLS_MAX: usize = 1000;
/// Longest one leader kill may take, from the kill to a full ISR after the
/// restart (bounds how long the producers of the kill test may run).
const KILL_CYCLE_MAX: Duration = Duration::from_secs(60);
/// Followers stopped by the SIGSTOP test.
const STOPS: usize = 2;
/// Attempts (controlled shutdowns of the current leader) to move a
/// partition's leadership back to the node that was cut off.
const LEADERSHIP_MOVES_MAX: usize = 3;
/// Cuts the quorum test may add when no cut of the first round hit the
/// quorum's leader (it moved between cuts).
const EXTRA_CUTS_MAX: usize = 3;

/// One cluster at a time on this machine: every test holds this.
static ONE_CLUSTER: Mutex<()> = Mutex::new(());

fn one_cluster_at_a_time() -> MutexGuard<'static, ()> {
    ONE_CLUSTER
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Three nodes with `extra` settings after [`SETTINGS`], the topic created
/// (replication factor 3, `min.insync.replicas=2`) and fully in sync.
fn start_cluster(extra: &[(&str, &str)]) -> anyhow::Result<(Cluster, Vec<PartitionView>)> {
    let mut settings = SETTINGS.to_vec();
    settings.extend_from_slice(extra);
    let cluster = Cluster::start(NODES, &settings)?;
    create_topic(&cluster.bootstrap(), TOPIC, PARTITIONS, REPLICATION)?;
    let views = cluster.wait_for_full_isr(&all_nodes(), FULL_ISR_TIMEOUT)?;
    for p in 0..PARTITIONS {
        let view = partition(&views, TOPIC, p)?;
        if view.replicas.len() != NODES {
            bail!("{view}: not on {NODES} replicas");
        }
    }
    Ok((cluster, views))
}

/// Create `topic` through `bootstrap` with an rdkafka AdminClient.
fn create_topic(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    replication: i32,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot build a runtime")?;
    runtime.block_on(async {
        let admin = common::admin(bootstrap)?;
        let new_topic = NewTopic::new(topic, partitions, TopicReplication::Fixed(replication))
            .set("min.insync.replicas", "2");
        let results = admin
            .create_topics([&new_topic], &common::admin_options())
            .await?;
        for result in results {
            if let Err((name, code)) = result {
                bail!("cannot create topic {name}: {code:?}");
            }
        }
        Ok(())
    })
}

fn all_nodes() -> Vec<usize> {
    (0..NODES).collect()
}

fn others(index: usize) -> Vec<usize> {
    (0..NODES).filter(|&i| i != index).collect()
}

/// `topic`/`p` in a Metadata answer.
fn partition<'a>(
    views: &'a [PartitionView],
    topic: &str,
    p: i32,
) -> anyhow::Result<&'a PartitionView> {
    views
        .iter()
        .find(|v| v.topic == topic && v.partition == p)
        .with_context(|| format!("no {topic}/{p} in the Metadata answer"))
}

/// The partitions of [`TOPIC`] that `leader` leads in a Metadata answer.
fn led_by(views: &[PartitionView], leader: i32) -> Vec<i32> {
    views
        .iter()
        .filter(|v| v.topic == TOPIC && v.leader == leader)
        .map(|v| v.partition)
        .collect()
}

/// The checks after every fault: every node agrees on a full ISR again,
/// the group's commits acknowledged before the fault survived it, and
/// producers are acknowledged again. Returns the agreed Metadata answer.
fn recovered(
    cluster: &Cluster,
    workload: &Workload,
    group: &GroupCommits,
    commits_before: &BTreeMap<i32, i64>,
    when: &str,
) -> anyhow::Result<Vec<PartitionView>> {
    let views = cluster
        .wait_for_full_isr(&all_nodes(), FULL_ISR_TIMEOUT)
        .with_context(|| format!("{when}: the cluster did not return to a full ISR"))?;
    assert_committed_at_least(&SPEC, &cluster.bootstrap(), commits_before, when)?;
    group.check_no_rewind(when)?;
    workload
        .wait_for_acks_above(workload.acked())
        .with_context(|| format!("{when}: producers were not acknowledged again"))?;
    Ok(views)
}

/// Traffic flows for a drawn while between faults (this schedules the next
/// fault; it waits for no condition).
fn gap(schedule: &mut Schedule) {
    std::thread::sleep(schedule.draw(GAP_MIN, GAP_MAX));
}

/// The number of leader kills: [`LEADER_KILLS`], or `WEIR_SOAK_KILLS`.
fn leader_kills() -> anyhow::Result<usize> {
    let kills = match std::env::var(SOAK_KILLS_ENV) {
        Ok(text) => text
            .trim()
            .parse()
            .with_context(|| format!("{SOAK_KILLS_ENV}={text:?} is not a number"))?,
        Err(_) => LEADER_KILLS,
    };
    if !(1..=SOAK_KILLS_MAX).contains(&kills) {
        bail!("{SOAK_KILLS_ENV}={kills}: between 1 and {SOAK_KILLS_MAX}");
    }
    Ok(kills)
}

/// The `q`-quantile of sorted durations (nearest rank).
fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[test]
fn acked_records_and_group_offsets_survive_repeated_leader_sigkills() -> anyhow::Result<()> {
    let _one = one_cluster_at_a_time();
    let kills = leader_kills()?;
    let mut schedule = Schedule::adaptive(fault_seed()?);
    let result = (|| {
        let (mut cluster, mut views) = start_cluster(&[])?;
        let time_max = KILL_CYCLE_MAX * u32::try_from(kills)? + PRODUCE_TIME_MAX;
        let workload = Workload::start(SPEC, &cluster.bootstrap(), time_max)?;
        let group = GroupCommits::start(SPEC, &cluster.bootstrap(), time_max)?;
        let mut failovers = Vec::with_capacity(kills);
        for kill in 1..=kills {
            gap(&mut schedule);
            let p = i32::try_from(schedule.pick(usize::try_from(PARTITIONS)?))?;
            let leader = partition(&views, TOPIC, p)?.leader;
            let index = cluster.index_of(leader)?;
            let led = led_by(&views, leader);
            let commits = group.acknowledged();
            // Killing the quorum's leader too adds an election to the
            // failover: say so beside its time.
            let quorum = cluster.quorum_leader(&all_nodes(), QUORUM_LEADER_TIMEOUT)?;
            let also = if quorum == leader {
                " and of the metadata quorum"
            } else {
                ""
            };
            schedule.begin(format!(
                "kill {kill}: SIGKILL node {index} (id {leader}), leader of {TOPIC} partitions {led:?}{also}"
            ));
            let killed_at = Instant::now();
            cluster.nodes[index].sigkill()?;
            // Every record from this id on was handed to a producer after the kill.
            let id_min = workload.next_id();
            let resumed = workload.wait_for_acks_on(&led, id_min, FAILOVER_TIMEOUT)?;
            let failover = resumed.saturating_duration_since(killed_at);
            schedule.note(format!(
                "acks=all produce resumed after {} ms",
                failover.as_millis()
            ));
            eprintln!(
                "kill {kill}/{kills}: node id {leader}, partitions {led:?}{also}: failover {} ms",
                failover.as_millis()
            );
            failovers.push(failover);
            cluster.nodes[index].restart()?;
            schedule.note("restarted");
            views = recovered(
                &cluster,
                &workload,
                &group,
                &commits,
                &format!("after kill {kill}"),
            )?;
            schedule.note("full ISR");
        }
        failovers.sort_unstable();
        eprintln!(
            "failover (SIGKILL of a leader to the first acks=all acknowledgement) over {} kills: p50 {} ms, p90 {} ms, max {} ms",
            failovers.len(),
            quantile(&failovers, 0.5).as_millis(),
            quantile(&failovers, 0.9).as_millis(),
            quantile(&failovers, 1.0).as_millis()
        );
        finish_and_check(&cluster.bootstrap(), workload, Some(group))
    })();
    // Shown with --nocapture, or under a failing test.
    eprintln!("{}", schedule.report());
    schedule.explain(result)
}

#[test]
fn a_stopped_follower_leaves_the_isr_by_lag_and_rejoins_after_sigcont() -> anyhow::Result<()> {
    let _one = one_cluster_at_a_time();
    let mut schedule = Schedule::adaptive(fault_seed()?);
    let result = (|| {
        let (mut cluster, _) =
            start_cluster(&[("broker.session.timeout.ms", STOP_SESSION_TIMEOUT_MS)])?;
        let workload = Workload::start(SPEC, &cluster.bootstrap(), PRODUCE_TIME_MAX)?;
        let group = GroupCommits::start(SPEC, &cluster.bootstrap(), PRODUCE_TIME_MAX)?;
        let mut views = recovered(
            &cluster,
            &workload,
            &group,
            &BTreeMap::new(),
            "before the stops",
        )?;
        for stop in 1..=STOPS {
            gap(&mut schedule);
            let p = i32::try_from(schedule.pick(usize::try_from(PARTITIONS)?))?;
            let view = partition(&views, TOPIC, p)?;
            let followers: Vec<i32> = view
                .replicas
                .iter()
                .copied()
                .filter(|&r| r != view.leader)
                .collect();
            let follower = followers[schedule.pick(followers.len())];
            let index = cluster.index_of(follower)?;
            // Every partition of the topic it follows (records flow into
            // each) must drop it from the ISR.
            let following: Vec<i32> = views
                .iter()
                .filter(|v| {
                    v.topic == TOPIC && v.leader != follower && v.replicas.contains(&follower)
                })
                .map(|v| v.partition)
                .collect();
            let commits = group.acknowledged();
            schedule.begin(format!(
                "stop {stop}: SIGSTOP node {index} (id {follower}), follower of {TOPIC} partitions {following:?}"
            ));
            cluster.nodes[index].sigstop()?;
            cluster
                .wait_for_metadata(
                    &others(index),
                    LEAVE_ISR_TIMEOUT,
                    "the stopped follower to leave the ISR",
                    |answers| {
                        answers.iter().all(|views| {
                            following.iter().all(|&fp| {
                                partition(views, TOPIC, fp)
                                    .is_ok_and(|v| !v.isr.contains(&follower))
                            })
                        })
                    },
                )
                .with_context(|| format!("stop {stop}: node id {follower} stayed in the ISR"))?;
            schedule.note("left the ISR");
            // It stays stopped a drawn while longer.
            std::thread::sleep(schedule.draw(Duration::ZERO, Duration::from_millis(1000)));
            cluster.nodes[index].sigcont()?;
            schedule.note("SIGCONT");
            views = recovered(
                &cluster,
                &workload,
                &group,
                &commits,
                &format!("after stop {stop}"),
            )?;
            schedule.note("back in the ISR");
        }
        finish_and_check(&cluster.bootstrap(), workload, Some(group))
    })();
    // Shown with --nocapture, or under a failing test.
    eprintln!("{}", schedule.report());
    schedule.explain(result)
}

#[test]
fn acked_records_and_group_offsets_survive_a_rolling_restart() -> anyhow::Result<()> {
    let _one = one_cluster_at_a_time();
    let mut schedule = Schedule::adaptive(fault_seed()?);
    let result = (|| {
        let (mut cluster, _) = start_cluster(&[])?;
        let workload = Workload::start(SPEC, &cluster.bootstrap(), PRODUCE_TIME_MAX)?;
        let group = GroupCommits::start(SPEC, &cluster.bootstrap(), PRODUCE_TIME_MAX)?;
        recovered(
            &cluster,
            &workload,
            &group,
            &BTreeMap::new(),
            "before the restarts",
        )?;
        for index in schedule.shuffled(NODES) {
            gap(&mut schedule);
            let commits = group.acknowledged();
            schedule.begin(format!("SIGTERM node {index}, start it again"));
            let status = cluster.nodes[index].terminate()?;
            if !status.success() {
                bail!("node {index} exited with {status} after SIGTERM");
            }
            schedule.note("exited");
            cluster.nodes[index].restart()?;
            schedule.note("started");
            recovered(
                &cluster,
                &workload,
                &group,
                &commits,
                &format!("after restarting node {index}"),
            )?;
            schedule.note("full ISR");
        }
        finish_and_check(&cluster.bootstrap(), workload, Some(group))
    })();
    // Shown with --nocapture, or under a failing test.
    eprintln!("{}", schedule.report());
    schedule.explain(result)
}

/// A `weir produce` of one record with acks=all, run inside a node's
/// namespace and bootstrapped from that node only: while the node's link is
/// down it is the only client that reaches it.
struct PinnedProducer {
    /// Taken by [`PinnedProducer::finish`]; killed on drop otherwise.
    child: Option<Child>,
}

impl PinnedProducer {
    fn start(cluster: &Cluster, index: usize, p: i32, id: u64) -> anyhow::Result<Self> {
        let node = &cluster.nodes[index];
        let net = node.net().context("a cluster node has a namespace")?;
        let mut child = net
            .command(env!("CARGO_BIN_EXE_weir"))
            .args(["--brokers", &node.bootstrap(), "produce", TOPIC])
            .args([
                "--partition",
                &p.to_string(),
                "--acks",
                "all",
                "--idempotent",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot start weir produce in the node's namespace")?;
        let stdin = child.stdin.take().context("no stdin pipe");
        let producer = Self { child: Some(child) };
        let mut stdin = stdin?;
        writeln!(stdin, "{}", payload(id)).context("cannot write the record")?;
        // Closing stdin makes it send, flush and exit.
        drop(stdin);
        Ok(producer)
    }

    /// Whether it still runs: its record is neither acknowledged nor
    /// failed (the CLI exits once its record is either).
    fn pending(&mut self) -> anyhow::Result<bool> {
        let child = self.child.as_mut().context("the pinned producer is gone")?;
        Ok(child
            .try_wait()
            .context("cannot wait for weir produce")?
            .is_none())
    }

    /// Wait (bounded) for it to exit; kill it if it does not. Its stderr.
    fn finish(mut self) -> anyhow::Result<String> {
        let mut child = self.child.take().context("the pinned producer is gone")?;
        let waited = common::wait_until(PINNED_EXIT_TIMEOUT, "the pinned producer to exit", || {
            Ok(child.try_wait()?.is_some())
        });
        if waited.is_err() {
            let _ = child.kill();
        }
        let output = child.wait_with_output()?;
        Ok(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

impl Drop for PinnedProducer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[test]
fn a_cut_off_leader_stops_acknowledging_and_its_log_does_not_diverge() -> anyhow::Result<()> {
    let _one = one_cluster_at_a_time();
    let mut schedule = Schedule::adaptive(fault_seed()?);
    let result = (|| {
        let (mut cluster, _) = start_cluster(&[])?;
        let workload = Workload::start(SPEC, &cluster.bootstrap(), PRODUCE_TIME_MAX)?;
        let group = GroupCommits::start(SPEC, &cluster.bootstrap(), PRODUCE_TIME_MAX)?;
        let views = recovered(
            &cluster,
            &workload,
            &group,
            &BTreeMap::new(),
            "before the cut",
        )?;
        gap(&mut schedule);
        let p = i32::try_from(schedule.pick(usize::try_from(PARTITIONS)?))?;
        let cut_id = partition(&views, TOPIC, p)?.leader;
        let cut = cluster.index_of(cut_id)?;
        let hold = schedule.draw(Duration::from_millis(4000), Duration::from_millis(6000));
        let commits = group.acknowledged();
        let node_net = cluster.nodes[cut]
            .net()
            .context("a cluster node has a namespace")?
            .clone();
        schedule.begin(format!(
            "link of node {cut} (id {cut_id}), leader of {TOPIC}/{p}, down for at least {} ms",
            hold.as_millis()
        ));
        let cut_at = Instant::now();
        cluster.net().link_down(&node_net)?;
        let pinned_id = workload.reserve_id();
        let mut pinned = PinnedProducer::start(&cluster, cut, p, pinned_id)?;
        // The majority fences the cut-off node and elects another leader.
        cluster
            .wait_for_metadata(
                &others(cut),
                MOVE_TIMEOUT,
                "the majority to move the partition",
                |answers| {
                    answers.iter().all(|views| {
                        partition(views, TOPIC, p).is_ok_and(|v| {
                            v.leader >= 0 && v.leader != cut_id && !v.isr.contains(&cut_id)
                        })
                    })
                },
            )
            .context("the majority did not take over from the cut-off leader")?;
        schedule.note("the majority leads");
        if let Some(rest) = hold.checked_sub(cut_at.elapsed()) {
            std::thread::sleep(rest);
        }
        let pending_while_cut = pinned.pending()?;
        cluster.net().link_up(&node_net)?;
        schedule.note("link up");
        if !pending_while_cut {
            // Exited: acknowledged (a broken promise) or failed at once,
            // which would leave the check without a write to refuse.
            bail!(
                "the producer pinned to node {cut} (id {cut_id}), the cut-off leader of {TOPIC}/{p}, did not stay waiting for an acks=all acknowledgement while the link was down:\n{}",
                pinned.finish()?
            );
        }
        let views = recovered(&cluster, &workload, &group, &commits, "after the heal")?;
        schedule.note("full ISR");
        // After the heal the pinned record may be delivered through the new
        // leader: its offset is unknown, so it stays "maybe" (stored once
        // or not at all).
        let pinned_stderr = pinned.finish()?;
        eprintln!(
            "the pinned producer after the heal: {}",
            pinned_stderr.trim()
        );
        lock(workload.history()).maybe(
            pinned_id,
            format!("pinned producer: {}", pinned_stderr.trim()),
        );
        move_leadership_back(
            &mut cluster,
            &mut schedule,
            &workload,
            &group,
            views,
            p,
            cut_id,
        )?;
        let before = partition(&cluster.metadata_of(cut)?, TOPIC, p)?.clone();
        finish_and_check(&cluster.bootstrap(), workload, Some(group))?;
        // The read went through the formerly cut-off node's log only if it
        // led the partition throughout.
        let after = partition(&cluster.metadata_of(cut)?, TOPIC, p)?.clone();
        if (after.leader, after.leader_epoch) != (before.leader, before.leader_epoch) {
            bail!(
                "leadership of {TOPIC}/{p} moved during the read ({before} then {after}): its log was not read through node id {cut_id}"
            );
        }
        Ok(())
    })();
    // Shown with --nocapture, or under a failing test.
    eprintln!("{}", schedule.report());
    schedule.explain(result)
}

/// Stop the current leader of `TOPIC`/`p` with SIGTERM (its leaderships
/// move) and start it again, until node `target` leads the partition, so
/// that the final read goes through `target`'s log.
fn move_leadership_back(
    cluster: &mut Cluster,
    schedule: &mut Schedule,
    workload: &Workload,
    group: &GroupCommits,
    mut views: Vec<PartitionView>,
    p: i32,
    target: i32,
) -> anyhow::Result<()> {
    for attempt in 1..=LEADERSHIP_MOVES_MAX {
        let leader = partition(&views, TOPIC, p)?.leader;
        if leader == target {
            return Ok(());
        }
        let index = cluster.index_of(leader)?;
        let commits = group.acknowledged();
        schedule.begin(format!(
            "SIGTERM node {index} (id {leader}) so that id {target} leads {TOPIC}/{p} again"
        ));
        let status = cluster.nodes[index].terminate()?;
        if !status.success() {
            bail!("node {index} exited with {status} after SIGTERM");
        }
        cluster.nodes[index].restart()?;
        schedule.note("restarted");
        views = recovered(
            cluster,
            workload,
            group,
            &commits,
            &format!("after leadership move {attempt}"),
        )?;
    }
    let leader = partition(&views, TOPIC, p)?.leader;
    if leader != target {
        bail!(
            "{TOPIC}/{p} is led by id {leader} after {LEADERSHIP_MOVES_MAX} controlled shutdowns of its leader, never by id {target}: the formerly cut-off log could not be read"
        );
    }
    Ok(())
}

#[test]
fn cutting_off_every_node_in_turn_including_the_quorum_leader_loses_nothing() -> anyhow::Result<()>
{
    let _one = one_cluster_at_a_time();
    let mut schedule = Schedule::adaptive(fault_seed()?);
    let result = (|| {
        let (cluster, _) = start_cluster(&[])?;
        let workload = Workload::start(SPEC, &cluster.bootstrap(), PRODUCE_TIME_MAX)?;
        let group = GroupCommits::start(SPEC, &cluster.bootstrap(), PRODUCE_TIME_MAX)?;
        recovered(
            &cluster,
            &workload,
            &group,
            &BTreeMap::new(),
            "before the cuts",
        )?;
        let mut order = schedule.shuffled(NODES);
        let mut created = Vec::new();
        let mut cut_a_leader = false;
        let mut cut_index = 0;
        while cut_index < order.len() {
            let cut = order[cut_index];
            cut_index += 1;
            gap(&mut schedule);
            let quorum_leader = cluster.quorum_leader(&all_nodes(), QUORUM_LEADER_TIMEOUT)?;
            let cut_id = Cluster::node_id(cut);
            let leads = quorum_leader == cut_id;
            cut_a_leader |= leads;
            let hold = schedule.draw(Duration::from_millis(3000), Duration::from_millis(4000));
            let commits = group.acknowledged();
            let node_net = cluster.nodes[cut]
                .net()
                .context("a cluster node has a namespace")?
                .clone();
            schedule.begin(format!(
                "link of node {cut} (id {cut_id}{}) down for at least {} ms",
                if leads { ", the quorum's leader" } else { "" },
                hold.as_millis()
            ));
            let cut_at = Instant::now();
            cluster.net().link_down(&node_net)?;
            // The rest fence it: out of every ISR it shared.
            cluster
                .wait_for_metadata(
                    &others(cut),
                    MOVE_TIMEOUT,
                    "the cut-off node to be fenced",
                    |answers| {
                        answers.iter().all(|views| {
                            views.iter().all(|v| {
                                v.leader >= 0
                                    && v.leader != cut_id
                                    && (v.isr.len() == 1 || !v.isr.contains(&cut_id))
                            })
                        })
                    },
                )
                .with_context(|| format!("the majority did not fence node id {cut_id}"))?;
            schedule.note("fenced");
            // Metadata written through the majority while the node is cut off.
            let topic = format!("{TOPIC}-during-cut-{}", created.len() + 1);
            let majority: Vec<String> = others(cut)
                .iter()
                .map(|&i| cluster.nodes[i].bootstrap())
                .collect();
            create_topic(&majority.join(","), &topic, 1, 2)?;
            created.push(topic);
            schedule.note("topic created");
            if let Some(rest) = hold.checked_sub(cut_at.elapsed()) {
                std::thread::sleep(rest);
            }
            cluster.net().link_up(&node_net)?;
            schedule.note("link up");
            let views = recovered(
                &cluster,
                &workload,
                &group,
                &commits,
                &format!("after the cut of node {cut}"),
            )?;
            schedule.note("full ISR");
            // Every node agrees on this answer: each knows every topic
            // created by the quorum, whichever node led it.
            for topic in &created {
                if !views.iter().any(|v| &v.topic == topic) {
                    bail!(
                        "after the cut of node {cut}: the nodes agree on metadata without topic {topic}"
                    );
                }
            }
            if cut_index == order.len() && !cut_a_leader {
                if order.len() >= NODES + EXTRA_CUTS_MAX {
                    bail!(
                        "the quorum's leadership moved away before every one of {} cuts",
                        order.len()
                    );
                }
                // The leadership moved between cuts: cut its holder next.
                let leader = cluster.quorum_leader(&all_nodes(), QUORUM_LEADER_TIMEOUT)?;
                order.push(cluster.index_of(leader)?);
            }
        }
        finish_and_check(&cluster.bootstrap(), workload, Some(group))
    })();
    // Shown with --nocapture, or under a failing test.
    eprintln!("{}", schedule.report());
    schedule.explain(result)
}

/// The adaptive schedule draws every choice from its seed, so a seed
/// replays the same faults.
#[test]
fn an_adaptive_schedule_replays_its_choices_from_the_seed() {
    let draw = |seed| {
        let mut schedule = Schedule::adaptive(seed);
        let picks: Vec<usize> = (0..8).map(|_| schedule.pick(3)).collect();
        let holds: Vec<Duration> = (0..8)
            .map(|_| schedule.draw(Duration::from_millis(300), Duration::from_millis(1500)))
            .collect();
        (picks, holds, schedule.shuffled(5))
    };
    let (picks, holds, order) = draw(7);
    assert_eq!((picks.clone(), holds.clone(), order.clone()), draw(7));
    assert_ne!((picks.clone(), holds.clone(), order.clone()), draw(8));
    assert!(picks.iter().all(|&p| p < 3));
    assert!(
        holds
            .iter()
            .all(|h| (Duration::from_millis(300)..=Duration::from_millis(1500)).contains(h))
    );
    let mut sorted = order;
    sorted.sort_unstable();
    assert_eq!(sorted, vec![0, 1, 2, 3, 4]);
    let mut schedule = Schedule::adaptive(7);
    schedule.begin("SIGKILL node 1");
    schedule.note("restarted");
    let report = schedule.report();
    assert!(report.contains("replay with WEIR_FAULT_SEED=7"), "{report}");
    assert!(report.contains("SIGKILL node 1 (restarted at"), "{report}");
}
