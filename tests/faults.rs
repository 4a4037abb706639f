//! Fault tests (run as root): `weir serve` in its own network namespace,
//! idempotent acks=all producers (rdkafka) running while a seeded schedule of
//! faults hits the broker (SIGKILL and restart, a cut link, SIGSTOP and
//! SIGCONT), then a read_committed consumer reads everything back and the
//! history checker (tests/common/history.rs) verifies that every
//! acknowledged record is read exactly once at its offset and nothing else
//! went wrong. A failure prints `replay with WEIR_FAULT_SEED=<seed>` and the
//! faults applied. The harness itself (namespaces, cleanup) is tested here too.
//!
//! This is one node; the replicated cluster's fault suite
//! (tests/cluster_faults.rs) runs the same load (tests/common/workload.rs)
//! against three.

mod common;

use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use kafka_protocol::messages::ApiVersionsRequest;

use common::faults::{FaultKind, Node, Plan, Schedule, fault_seed};
use common::netns::{self, Net};
use common::raw::RawClient;
use common::workload::{GroupCommits, Spec, Workload, assert_committed_at_least, finish_and_check};

const TOPIC: &str = "faults";
const PARTITIONS: i32 = 3;
/// Longest a workload's producers may run (a bound; the schedule ends them sooner).
const PRODUCE_TIME_MAX: Duration = Duration::from_secs(60);
/// The load: two producers of at most 400 records a second each, riding
/// out every fault injected here (60 s message timeouts).
const SPEC: Spec = Spec {
    topic: TOPIC,
    partitions: PARTITIONS,
    group: "fault-group",
    producers: 2,
    records_per_second_max: 400,
    records_per_producer_max: 20_000,
    message_timeout_ms: "60000",
    request_timeout_ms: None,
    queued_records_max: "2000",
    flush_timeout: Duration::from_secs(60),
    resume_timeout: Duration::from_secs(30),
    committed_timeout: Duration::from_secs(30),
    read_timeout: Duration::from_secs(60),
    commit_interval: Duration::from_millis(200),
};

/// One namespace, one node with a short group rebalance delay, the topic created.
fn start_node() -> anyhow::Result<(Net, Node)> {
    let mut net = Net::new()?;
    let node_net = net.add_node()?;
    let node = Node::start_in(&node_net, &["--set", "group.initial.rebalance.delay.ms=0"])?;
    common::create_topic_blocking(&node.bootstrap(), TOPIC, PARTITIONS, &[])?;
    Ok((net, node))
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
        let workload = Workload::start(SPEC, &bootstrap, PRODUCE_TIME_MAX)?;
        let group = GroupCommits::start(SPEC, &bootstrap, PRODUCE_TIME_MAX * 2)?;
        // The commits acknowledged before each kill must survive it.
        let mut before_kill = group.acknowledged();
        let mut kills_with_commits = 0;
        schedule.run(&mut nodes, None, |kill| {
            let when = format!("after kill {}", kill + 1);
            assert_committed_at_least(&SPEC, &bootstrap, &before_kill, &when)?;
            if !before_kill.is_empty() {
                kills_with_commits += 1;
            }
            before_kill = group.acknowledged();
            Ok(())
        })?;
        workload.wait_for_acks_above(workload.acked())?;
        let commits = group.finish()?;
        eprintln!(
            "group: {commits} commits, {kills_with_commits} kills checked with commits before them"
        );
        if kills_with_commits == 0 {
            bail!(
                "no kill came after an acknowledged commit ({commits} commits): the offsets check proved nothing"
            );
        }
        finish_and_check(&bootstrap, workload, None)
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
        let workload = Workload::start(SPEC, &bootstrap, PRODUCE_TIME_MAX)?;
        schedule.run(&mut nodes, Some(&net), |_| Ok(()))?;
        // Producers carry on once the link is back.
        workload.wait_for_acks_above(workload.acked())?;
        finish_and_check(&bootstrap, workload, None)
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
        let workload = Workload::start(SPEC, &bootstrap, PRODUCE_TIME_MAX)?;
        schedule.run(&mut nodes, None, |_| Ok(()))?;
        workload.wait_for_acks_above(workload.acked())?;
        finish_and_check(&bootstrap, workload, None)
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
