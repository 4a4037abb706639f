//! A cluster of `weir serve` processes, driven by real clients: topics with
//! three replicas created from any node and answered alike by every node,
//! `weir cluster local`, replicas moved with `weir topic reassign` while a
//! producer runs, leadership given back with `weir cluster elect-leaders`,
//! a group's committed offsets kept across its coordinator's death,
//! transactions whose partitions other brokers lead, committed across the
//! death of their coordinator, the
//! refusals that keep a data folder to the kind of node that made it, a
//! broker-only node (a quorum learner) added, restarted, replaced with an
//! empty disk and unregistered, a controller-only voter, and a voter that
//! lost its data replaced through `remove-controller` and `add-controller`,
//! a tag-filtered view described and served by every node, a group
//! config set through one node and described by every node, and a share
//! group's progress kept across the deaths of its partition's leader and
//! of its share coordinator, and across SIGKILLs of nodes drawn from a seed.
//!
//! The metrics follow the cluster's health: the under-replicated
//! partitions of a dead broker's, the quorum's leader, term and members'
//! lag.
//!
//! The fault suite (tests/cluster_faults.rs) kills, stops and cuts nodes
//! under load; these tests check what a user does with a healthy cluster.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use common::{Broker, CLIENT_TIMEOUT, cli, wait_until};
use rdkafka::admin::{NewTopic, TopicReplication};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::BaseRecord;
use rdkafka::{Offset, TopicPartitionList};

/// How long a cluster may take to form, elect and settle an ISR change.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);

/// A partition as one node's Metadata describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Described {
    leader: i32,
    replicas: Vec<i32>,
    isr: Vec<i32>,
}

/// Three (or `n`) nodes, each a broker and a controller, on free local ports.
fn start_cluster(n: u16, extra: &[&str]) -> anyhow::Result<Vec<Broker>> {
    start_cluster_with(n, extra, |_| Vec::new())
}

/// As [`start_cluster`], with `own(id)` added to node `id`'s arguments.
fn start_cluster_with(
    n: u16,
    extra: &[&str],
    own: impl Fn(u16) -> Vec<String>,
) -> anyhow::Result<Vec<Broker>> {
    Ok(start_voters(n, extra, own)?.0)
}

/// As [`start_cluster_with`], also returning the `--voters` value, for
/// nodes started later (broker-only nodes).
fn start_voters(
    n: u16,
    extra: &[&str],
    own: impl Fn(u16) -> Vec<String>,
) -> anyhow::Result<(Vec<Broker>, String)> {
    let mut kafka = Vec::new();
    let mut voters = Vec::new();
    for id in 1..=n {
        kafka.push(common::reserve_port()?);
        voters.push(format!("{id}@127.0.0.1:{}", common::reserve_port()?));
    }
    let voters = voters.join(",");
    // Each node prints its address only once the quorum has formed, which
    // needs a majority running: start them together.
    let handles: Vec<_> = (1..=n)
        .zip(kafka)
        .map(|(id, port)| {
            let mut args: Vec<String> = vec![
                "--node-id".into(),
                id.to_string(),
                "--voters".into(),
                voters.clone(),
            ];
            args.extend(extra.iter().map(|s| s.to_string()));
            args.extend(own(id));
            std::thread::spawn(move || {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                Broker::start_at(&format!("127.0.0.1:{port}"), &args)
            })
        })
        .collect();
    let mut nodes = Vec::new();
    for handle in handles {
        let node = handle
            .join()
            .map_err(|_| anyhow::anyhow!("a node's start thread panicked"))??;
        nodes.push(node);
    }
    // Listening is not serving yet: a broker is fenced until its first
    // heartbeat, and Metadata names only unfenced brokers.
    let first = nodes[0].bootstrap();
    wait_until(
        SETTLE_TIMEOUT,
        "every broker to be registered and unfenced",
        || {
            let consumer: BaseConsumer = common::consumer_config(&first).create()?;
            Ok(consumer
                .fetch_metadata(None, Duration::from_secs(5))
                .is_ok_and(|m| m.brokers().len() == usize::from(n)))
        },
    )?;
    Ok((nodes, voters))
}

/// `bootstrap.servers` of the nodes still running.
fn bootstrap_alive(nodes: &[Broker]) -> String {
    nodes
        .iter()
        .filter(|n| n.pid().is_some())
        .map(Broker::bootstrap)
        .collect::<Vec<_>>()
        .join(",")
}

fn bootstrap(nodes: &[Broker]) -> String {
    nodes
        .iter()
        .map(Broker::bootstrap)
        .collect::<Vec<_>>()
        .join(",")
}

/// `topic`'s partitions as the node at `address` describes them.
fn describe(address: &str, topic: &str) -> anyhow::Result<BTreeMap<i32, Described>> {
    let consumer: BaseConsumer = common::consumer_config(address).create()?;
    let metadata = consumer.fetch_metadata(Some(topic), CLIENT_TIMEOUT)?;
    let t = metadata
        .topics()
        .first()
        .context("no topic in the metadata answer")?;
    Ok(t.partitions()
        .iter()
        .map(|p| {
            let mut isr = p.isr().to_vec();
            isr.sort_unstable();
            (
                p.id(),
                Described {
                    leader: p.leader(),
                    replicas: p.replicas().to_vec(),
                    isr,
                },
            )
        })
        .collect())
}

async fn create_replicated(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    factor: i32,
) -> anyhow::Result<()> {
    let admin = common::admin(bootstrap)?;
    let results = admin
        .create_topics(
            &[
                NewTopic::new(topic, partitions, TopicReplication::Fixed(factor))
                    .set("min.insync.replicas", "2"),
            ],
            &common::admin_options(),
        )
        .await?;
    for result in results {
        result.map_err(|(name, code)| anyhow::anyhow!("creating {name}: {code}"))?;
    }
    Ok(())
}

fn create_replicated_blocking(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    factor: i32,
) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(create_replicated(bootstrap, topic, partitions, factor))
}

/// Produce `count` records numbered from `first` with acks=all and an
/// idempotent producer; returns where each landed.
fn produce(
    bootstrap: &str,
    topic: &str,
    first: u64,
    count: u64,
) -> anyhow::Result<Vec<(i32, i64)>> {
    let mut config = common::producer_config(bootstrap);
    config.set("enable.idempotence", "true");
    let producer = common::tracked_producer(&config)?;
    for id in first..first + count {
        let value = id.to_string();
        common::send_tracked(
            &producer,
            BaseRecord::with_opaque_to(topic, Box::new(id))
                .key(value.as_bytes())
                .payload(value.as_bytes()),
        )?;
    }
    let deliveries = common::flush_all_delivered(&producer, usize::try_from(count)?)?;
    deliveries
        .into_iter()
        .map(|d| d.result.map_err(|e| anyhow::anyhow!(e)))
        .collect()
}

/// Every record of `topic`, read from `bootstrap` to the high watermark, as
/// the numbers their values carry, per partition.
fn read_all(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
) -> anyhow::Result<HashMap<i32, Vec<u64>>> {
    let all: Vec<i32> = (0..partitions).collect();
    let read = common::read_to_high_watermark(bootstrap, topic, &all, SETTLE_TIMEOUT)?;
    read.into_iter()
        .map(|(p, messages)| {
            let values = messages
                .iter()
                .map(|m| {
                    let text =
                        std::str::from_utf8(rdkafka::Message::payload(m).unwrap_or_default())?;
                    Ok(text.parse::<u64>()?)
                })
                .collect::<anyhow::Result<Vec<u64>>>()?;
            Ok((p, values))
        })
        .collect()
}

/// Wait until every partition of `topic` has a leader and its whole replica
/// set in sync, as every node in `nodes` describes it alike.
fn wait_full_isr(nodes: &[Broker], topic: &str) -> anyhow::Result<BTreeMap<i32, Described>> {
    let mut seen = BTreeMap::new();
    wait_until(
        SETTLE_TIMEOUT,
        "a full ISR, described alike by every node",
        || {
            let mut views = Vec::new();
            for node in nodes {
                match describe(&node.bootstrap(), topic) {
                    Ok(view) => views.push(view),
                    Err(_) => return Ok(false),
                }
            }
            let first = views[0].clone();
            let settled = !first.is_empty()
                && first.values().all(|d| {
                    let mut replicas = d.replicas.clone();
                    replicas.sort_unstable();
                    d.leader >= 0 && replicas == d.isr
                })
                && views.iter().all(|v| *v == first);
            seen = first;
            Ok(settled)
        },
    )?;
    Ok(seen)
}

#[test]
fn a_replicated_topic_is_served_alike_by_every_node_and_survives_its_leaders_death()
-> anyhow::Result<()> {
    let mut nodes = start_cluster(3, &[])?;
    let all = bootstrap(&nodes);
    create_replicated_blocking(&all, "orders", 3, 3)?;
    let placed = wait_full_isr(&nodes, "orders")?;
    let leaders: Vec<i32> = placed.values().map(|d| d.leader).collect();
    ensure!(
        leaders
            .iter()
            .collect::<std::collections::BTreeSet<_>>()
            .len()
            == 3,
        "three partitions on three brokers should have three leaders: {placed:?}"
    );
    let acked = produce(&all, "orders", 0, 300)?;
    ensure!(acked.len() == 300);

    // Kill partition 0's leader; producing goes on through the others.
    let victim = usize::try_from(placed[&0].leader - 1)?;
    nodes[victim].sigkill()?;
    let alive: Vec<String> = nodes
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != victim)
        .map(|(_, n)| n.bootstrap())
        .collect();
    let alive = alive.join(",");
    produce(&alive, "orders", 300, 300)?;
    // weir cluster status names the dead broker fenced and the partitions
    // it no longer copies under-replicated, with the quorum still led.
    let survivor = (victim + 1) % 3;
    let victim_id = i32::try_from(victim + 1)?;
    wait_until(
        SETTLE_TIMEOUT,
        "status to show the dead broker fenced",
        || {
            let out = cli::weir_ok(&nodes[survivor], &["cluster", "status", "--json"], b"")?;
            let status: serde_json::Value = serde_json::from_str(&out)?;
            let fenced = status["brokers"].as_array().is_some_and(|b| {
                b.iter()
                    .any(|b| b["id"] == victim_id && b["state"] == "fenced")
            });
            let under = status["under_replicated"]
                .as_array()
                .is_some_and(|p| p.iter().any(|p| p == "orders-0"));
            let led = status["quorum"]["leader"].as_i64().is_some_and(|l| l >= 1)
                && status["quorum"]["voters"]
                    .as_array()
                    .is_some_and(|v| v.len() == 3);
            Ok(fenced && under && led)
        },
    )?;
    // The survivors' metrics say it too: orders-0's new leader counts it
    // under-replicated, and both follow one quorum leader in one term.
    wait_until(
        SETTLE_TIMEOUT,
        "the metrics to show orders-0 under-replicated",
        || {
            let mut under = 0.0;
            let mut quorum = Vec::new();
            for (i, node) in nodes.iter().enumerate() {
                if i == victim {
                    continue;
                }
                under += metric(node, "weir_under_replicated_partitions")?.unwrap_or(0.0);
                quorum.push((
                    metric(node, "weir_raft_leader_id")?,
                    metric(node, "weir_raft_term")?,
                ));
            }
            let agreed = quorum[0] == quorum[1]
                && quorum[0]
                    .0
                    .is_some_and(|leader| leader >= 1.0 && leader != f64::from(victim_id))
                && quorum[0].1.is_some_and(|term| term >= 1.0);
            Ok(under >= 1.0 && agreed)
        },
    )?;
    let read = read_all(&alive, "orders", 3)?;
    let mut values: Vec<u64> = read.values().flatten().copied().collect();
    values.sort_unstable();
    ensure!(
        values == (0..600).collect::<Vec<_>>(),
        "every acknowledged record once, none else: read {} records",
        values.len()
    );

    // Back again, it catches up and rejoins every ISR.
    nodes[victim].restart()?;
    wait_full_isr(&nodes, "orders")?;
    // Every partition, `__consumer_offsets`' too, catches up at its own pace.
    let mut last = serde_json::Value::Null;
    let caught_up = wait_until(SETTLE_TIMEOUT, "no partition under-replicated", || {
        let out = cli::weir_ok(&nodes[survivor], &["cluster", "status", "--json"], b"")?;
        last = serde_json::from_str(&out)?;
        Ok(last["partitions"]["under_replicated"] == 0
            && last["brokers"]
                .as_array()
                .is_some_and(|b| b.len() == 3 && b.iter().all(|b| b["state"] == "active")))
    });
    ensure!(caught_up.is_ok(), "status after the restart: {last}");
    // Then no node counts a partition under-replicated or offline, and the
    // quorum's leader reports each other voter's lag.
    wait_until(SETTLE_TIMEOUT, "the metrics to show every ISR full", || {
        let mut clean = true;
        let mut lags = 0;
        for node in &nodes {
            clean &= metric(node, "weir_under_replicated_partitions")? == Some(0.0)
                && metric(node, "weir_offline_partitions")? == Some(0.0);
            for other in 1..=3 {
                lags += usize::from(
                    metric(
                        node,
                        &format!("weir_raft_member_lag_entries{{node=\"{other}\"}}"),
                    )?
                    .is_some(),
                );
            }
        }
        Ok(clean && lags == 2)
    })?;
    let from_victim = read_all(&nodes[victim].bootstrap(), "orders", 3)?;
    ensure!(
        from_victim == read,
        "the restarted node serves what the others do"
    );

    // A group config set through one node is committed by the quorum and
    // described alike by every node.
    cli::weir_ok(
        &nodes[survivor],
        &[
            "group",
            "config",
            "set",
            "workers",
            "share.delivery.count.limit=3",
        ],
        b"",
    )?;
    for node in &nodes {
        wait_until(SETTLE_TIMEOUT, "every node to see the group config", || {
            let out = cli::weir_ok(node, &["group", "config", "get", "workers", "--json"], b"")?;
            let got: serde_json::Value = serde_json::from_str(&out)?;
            Ok(got["configs"].as_array().is_some_and(|c| {
                c.iter().any(|c| {
                    c["name"] == "share.delivery.count.limit"
                        && c["value"] == "3"
                        && c["source"] == "group"
                })
            }))
        })?;
    }
    Ok(())
}

#[test]
fn a_view_on_a_cluster_is_described_and_served_where_its_source_is_led() -> anyhow::Result<()> {
    let nodes = start_cluster(3, &[])?;
    let all = bootstrap(&nodes);
    create_replicated_blocking(&all, "events", 3, 3)?;
    let placed = wait_full_isr(&nodes, "events")?;
    cli::weir_ok(
        &nodes[0],
        &[
            "topic",
            "create-view",
            "gold",
            "--source",
            "events",
            "--tags",
            "GOLD",
        ],
        b"",
    )?;
    // Every node describes the view with its source's leaders and replicas.
    wait_until(
        SETTLE_TIMEOUT,
        "every node to describe the view like its source",
        || {
            for node in &nodes {
                if describe(&node.bootstrap(), "gold").ok().as_ref() != Some(&placed) {
                    return Ok(false);
                }
            }
            Ok(true)
        },
    )?;
    // Every third record of each partition is GOLD, the last one among them.
    let producer = common::tracked_producer(&common::producer_config(&all))?;
    for p in 0..3 {
        for i in 0..30u64 {
            let tag: &[u8] = if i % 3 == 2 { b"GOLD" } else { b"IRON" };
            let value = format!("{p}-{i}");
            let headers = rdkafka::message::OwnedHeaders::new().insert(rdkafka::message::Header {
                key: "weir.tag",
                value: Some(tag),
            });
            common::send_tracked(
                &producer,
                BaseRecord::with_opaque_to("events", Box::new(i))
                    .partition(p)
                    .payload(value.as_bytes())
                    .headers(headers),
            )?;
        }
    }
    common::flush_all_delivered(&producer, 90)?;
    for node in &nodes {
        let read =
            common::read_to_high_watermark(&node.bootstrap(), "gold", &[0, 1, 2], SETTLE_TIMEOUT)?;
        for p in 0..3 {
            let values: Vec<String> = read
                .get(&p)
                .map(|m| {
                    m.iter()
                        .map(|m| {
                            String::from_utf8_lossy(
                                rdkafka::Message::payload(m).unwrap_or_default(),
                            )
                            .into_owned()
                        })
                        .collect()
                })
                .unwrap_or_default();
            let expected: Vec<String> = (0..30)
                .filter(|i| i % 3 == 2)
                .map(|i| format!("{p}-{i}"))
                .collect();
            ensure!(
                values == expected,
                "view partition {p} via {}: {values:?}",
                node.bootstrap()
            );
        }
    }
    Ok(())
}

/// Send `signal` (STOP, CONT) to a node's process.
/// The value of the series `series` (its name and labels, as Prometheus'
/// text format writes them) in `node`'s `GET /metrics`; `None` when absent.
fn metric(node: &Broker, series: &str) -> anyhow::Result<Option<f64>> {
    let addr = node.admin_addr().context("no admin address")?;
    let body = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?
        .get(format!("http://{addr}/metrics"))
        .send()?
        .error_for_status()?
        .text()?;
    body.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map(|value| value.parse().context("not a sample value"))
        .transpose()
}

fn signal(node: &Broker, signal: &str) -> anyhow::Result<()> {
    let pid = node.pid().context("the node is not running")?;
    let sent = Command::new("kill")
        .args([format!("-{signal}"), pid.to_string()])
        .status()?;
    ensure!(sent.success(), "kill -{signal} {pid}");
    Ok(())
}

/// Each broker's state ("active" or "fenced") as `weir cluster status`
/// tells it through `via`.
fn broker_states(via: &Broker) -> anyhow::Result<BTreeMap<i64, String>> {
    let out = cli::weir_ok(via, &["cluster", "status", "--json"], b"")?;
    let status: serde_json::Value = serde_json::from_str(&out)?;
    Ok(status["brokers"]
        .as_array()
        .context("status without brokers")?
        .iter()
        .filter_map(|b| Some((b["id"].as_i64()?, b["state"].as_str()?.to_owned())))
        .collect())
}

#[test]
fn a_dead_broker_is_fenced_before_its_session_expires_and_a_paused_one_is_not() -> anyhow::Result<()>
{
    // A session far longer than this test waits: only the quorum leader's
    // probe of a silent broker's listener can fence it in time.
    let mut nodes = start_cluster(3, &["--set", "broker.session.timeout.ms=120000"])?;
    let all = bootstrap(&nodes);
    create_replicated_blocking(&all, "probed", 3, 3)?;
    let placed = wait_full_isr(&nodes, "probed")?;
    let out = cli::weir_ok(&nodes[0], &["cluster", "status", "--json"], b"")?;
    let status: serde_json::Value = serde_json::from_str(&out)?;
    let controller = status["controller"]
        .as_i64()
        .context("status without a controller")?;
    // A node that does not lead the quorum, so that pausing or killing it
    // leaves the quorum's leader and its sessions in place.
    let victim_id = (1..=3)
        .find(|&id| id != controller)
        .context("three nodes")?;
    let victim = usize::try_from(victim_id - 1)?;
    let witness = (victim + 1) % 3;
    let led: Vec<i32> = placed
        .iter()
        .filter(|(_, d)| i64::from(d.leader) == victim_id)
        .map(|(p, _)| *p)
        .collect();
    ensure!(
        !led.is_empty(),
        "node {victim_id} leads nothing: {placed:?}"
    );

    // Paused, its kernel still accepts connections on its listener: the
    // probe proves nothing and the broker keeps its session.
    signal(&nodes[victim], "STOP")?;
    let paused_until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < paused_until {
        let states = broker_states(&nodes[witness])?;
        ensure!(
            states.get(&victim_id).map(String::as_str) == Some("active"),
            "a paused broker was fenced before its session expired: {states:?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    signal(&nodes[victim], "CONT")?;

    // Dead, its listener refuses connections: fenced and its leaderships
    // moved within seconds, not after the two-minute session.
    nodes[victim].sigkill()?;
    let survivor = nodes[witness].bootstrap();
    wait_until(
        Duration::from_secs(30),
        "the dead broker's leaderships to move",
        || {
            let now = describe(&survivor, "probed")?;
            Ok(led
                .iter()
                .all(|p| now.get(p).is_some_and(|d| i64::from(d.leader) != victim_id)))
        },
    )?;
    let states = broker_states(&nodes[witness])?;
    ensure!(
        states.get(&victim_id).map(String::as_str) == Some("fenced"),
        "{states:?}"
    );
    let acked = produce(&survivor, "probed", 0, 50)?;
    ensure!(acked.len() == 50);
    Ok(())
}

#[test]
fn replicas_move_while_a_producer_runs_and_preferred_leaders_come_back() -> anyhow::Result<()> {
    let mut nodes = start_cluster(3, &[])?;
    let all = bootstrap(&nodes);
    create_replicated_blocking(&all, "moving", 1, 2)?;
    let before = wait_full_isr(&nodes, "moving")?;
    let old = before[&0].replicas.clone();
    let newcomer = (1..=3)
        .find(|b| !old.contains(b))
        .context("a broker outside the replicas")?;
    // The new set keeps the leader and swaps the other replica for the newcomer.
    let target = vec![newcomer, before[&0].leader];

    let producing = {
        let all = all.clone();
        std::thread::spawn(move || produce(&all, "moving", 0, 3000))
    };
    let spec = format!(
        "0:{}",
        target
            .iter()
            .map(i32::to_string)
            .collect::<Vec<_>>()
            .join(",")
    );
    cli::weir_ok(
        &nodes[0],
        &[
            "topic",
            "reassign",
            "moving",
            "--partition",
            &spec,
            "--wait",
            "120",
        ],
        b"",
    )?;
    let acked = producing
        .join()
        .map_err(|_| anyhow::anyhow!("the producer thread panicked"))??;
    ensure!(acked.len() == 3000);
    let after = wait_full_isr(&nodes, "moving")?;
    ensure!(
        after[&0].replicas == target,
        "the replicas are the target, preferred first: {after:?}"
    );
    let read = read_all(&all, "moving", 1)?;
    ensure!(
        read[&0] == (0..3000).collect::<Vec<_>>(),
        "every record, in order, after the move"
    );
    // The replica that left has no storage of the partition any more.
    let left = old
        .iter()
        .find(|b| !target.contains(b))
        .context("a replica that left")?;
    let left_dir = nodes[usize::try_from(*left - 1)?].data_dir().join("index");
    let listing = || -> anyhow::Result<Vec<String>> {
        Ok(std::fs::read_dir(&left_dir)?
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<Result<_, _>>()?)
    };
    let id = topic_id(&all, "moving")?;
    let waited = wait_until(SETTLE_TIMEOUT, "the old replica's index file to go", || {
        Ok(listing()?.iter().all(|name| !name.starts_with(&id)))
    });
    if waited.is_err() {
        bail!("broker {left} still holds {:?}", listing()?);
    }

    // The preferred leader (the newcomer) leads only after an election.
    let leader = after[&0].leader;
    if leader != newcomer {
        let out = cli::weir_ok(
            &nodes[0],
            &["cluster", "elect-leaders", "--topic", "moving"],
            b"",
        )?;
        ensure!(out.contains("elected"), "elect-leaders said: {out}");
    }
    wait_until(SETTLE_TIMEOUT, "the preferred replica to lead", || {
        Ok(describe(&all, "moving")?[&0].leader == newcomer)
    })?;
    let again = cli::weir(
        &nodes[1],
        &["cluster", "elect-leaders", "--topic", "moving"],
        b"",
    )?;
    ensure!(again.status.success());
    ensure!(String::from_utf8_lossy(&again.stdout).contains("not needed"));

    // Bad targets are refused with Kafka's codes, and exit 1.
    let refused = cli::weir(
        &nodes[2],
        &["topic", "reassign", "moving", "--partition", "0:1,42"],
        b"",
    )?;
    ensure!(refused.status.code() == Some(1));
    ensure!(String::from_utf8_lossy(&refused.stderr).contains("InvalidReplicaAssignment"));

    manual_assignments_place_replicas_where_the_client_says(&nodes)?;
    nodes[0].stop()?;
    Ok(())
}

/// CreateTopics and CreatePartitions with the client's own replica sets
/// (`kafka-topics --replica-assignment`): each partition lands on the
/// brokers named, the first leading; an unknown broker, a broker named
/// twice, or a set of another size is INVALID_REPLICA_ASSIGNMENT.
fn manual_assignments_place_replicas_where_the_client_says(nodes: &[Broker]) -> anyhow::Result<()> {
    use rdkafka::admin::NewPartitions;
    use rdkafka::types::RDKafkaErrorCode;
    let all = bootstrap(nodes);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let admin = common::admin(&all)?;
    let placed: &[&[i32]] = &[&[3, 1], &[2, 3]];
    let created = runtime.block_on(admin.create_topics(
        &[NewTopic::new(
            "placed",
            2,
            TopicReplication::Variable(placed),
        )],
        &common::admin_options(),
    ))?;
    ensure!(matches!(created.as_slice(), [Ok(_)]), "{created:?}");
    let described = wait_full_isr(nodes, "placed")?;
    for (p, replicas) in placed.iter().enumerate() {
        let p = i32::try_from(p)?;
        ensure!(described[&p].replicas == *replicas, "{described:?}");
        ensure!(described[&p].leader == replicas[0], "{described:?}");
    }
    let grown: &[&[i32]] = &[&[1, 2]];
    let added = runtime.block_on(admin.create_partitions(
        &[NewPartitions::new("placed", 3).assign(grown)],
        &common::admin_options(),
    ))?;
    ensure!(matches!(added.as_slice(), [Ok(_)]), "{added:?}");
    let described = wait_full_isr(nodes, "placed")?;
    ensure!(described[&2].replicas == [1, 2], "{described:?}");

    let refused = |result: Vec<rdkafka::admin::TopicResult>| match result.as_slice() {
        [Err((_, RDKafkaErrorCode::InvalidReplicaAssignment))] => Ok(()),
        other => Err(anyhow::anyhow!(
            "expected INVALID_REPLICA_ASSIGNMENT, got {other:?}"
        )),
    };
    for bad in [
        &[&[1, 42][..]][..],
        &[&[1, 1][..]][..],
        &[&[1, 2][..], &[3][..]][..],
    ] {
        refused(runtime.block_on(admin.create_topics(
            &[NewTopic::new(
                "misplaced",
                i32::try_from(bad.len())?,
                TopicReplication::Variable(bad),
            )],
            &common::admin_options(),
        ))?)?;
    }
    let other_size: &[&[i32]] = &[&[1, 2, 3]];
    refused(runtime.block_on(admin.create_partitions(
        &[NewPartitions::new("placed", 4).assign(other_size)],
        &common::admin_options(),
    ))?)?;
    Ok(())
}

#[test]
fn committed_offsets_survive_the_death_of_the_groups_coordinator() -> anyhow::Result<()> {
    let mut nodes = start_cluster(3, &["--set", "offsets.topic.num.partitions=3"])?;
    let all = bootstrap(&nodes);
    create_replicated_blocking(&all, "tracked", 1, 3)?;
    wait_full_isr(&nodes, "tracked")?;
    produce(&all, "tracked", 0, 100)?;

    let group = |bootstrap: &str| -> anyhow::Result<BaseConsumer> {
        let mut config = common::consumer_config(bootstrap);
        config
            .set("group.id", "keepers")
            .set("auto.offset.reset", "error");
        Ok(config.create()?)
    };
    let consumer = group(&all)?;
    let mut at = TopicPartitionList::new();
    at.add_partition_offset("tracked", 0, Offset::Offset(42))?;
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    loop {
        match consumer.commit(&at, CommitMode::Sync) {
            Ok(()) => break,
            Err(err) if Instant::now() < deadline => {
                // The offsets topic is made on the first FindCoordinator.
                eprintln!("commit not taken yet: {err}");
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(err) => bail!("cannot commit: {err}"),
        }
    }
    drop(consumer);
    wait_full_isr(&nodes, "__consumer_offsets")?;

    // The coordinator is the leader of the group's offsets partition.
    let offsets = describe(&all, "__consumer_offsets")?;
    let victim = coordinator_of(&all, 0, "keepers")?;
    ensure!(
        offsets.values().any(|d| d.leader == victim),
        "the coordinator {victim} leads an offsets partition: {offsets:?}"
    );
    nodes[usize::try_from(victim - 1)?].sigkill()?;
    let alive = bootstrap_alive(&nodes);
    let resumed = group(&alive)?;
    let mut wanted = TopicPartitionList::new();
    wanted.add_partition("tracked", 0);
    let mut committed = None;
    wait_until(
        SETTLE_TIMEOUT,
        "the new coordinator to answer",
        || match resumed.committed_offsets(wanted.clone(), Duration::from_secs(5)) {
            Ok(list) => {
                committed = list.elements().first().map(|e| e.offset());
                Ok(true)
            }
            Err(_) => Ok(false),
        },
    )?;
    ensure!(
        committed == Some(Offset::Offset(42)),
        "the committed offset after failover: {committed:?}"
    );
    Ok(())
}

/// `topic`'s id, as the file names of its storage spell it.
fn topic_id(bootstrap: &str, topic: &str) -> anyhow::Result<String> {
    let address = bootstrap.split(',').next().context("an address")?;
    let mut client = weir_client::Client::connect(address, &weir_client::Config::default())?;
    let metadata = client.metadata(Some(&[topic.to_owned()]))?;
    let found = metadata.topics.first().context("no topic in the answer")?;
    Ok(found.topic_id.hyphenated().to_string())
}

#[test]
fn cluster_local_runs_three_nodes_and_stops_them_cleanly() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    // Nine ports: 3 Kafka listeners 100 apart, each with its controller and
    // admin ports after it.
    let base = free_base_port()?;
    let mut child = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args([
            "cluster",
            "local",
            "--nodes",
            "3",
            "--port",
            &base.to_string(),
        ])
        .arg("--data-dir")
        .arg(dir.path())
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let rx = stdout_lines(&mut child)?;
    let mut bootstrap = None;
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    while bootstrap.is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = match rx.recv_timeout(left) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                bail!("weir cluster local printed no bootstrap line");
            }
        };
        bootstrap = line.strip_prefix("bootstrap: ").map(str::to_owned);
    }
    let bootstrap = bootstrap.context("bootstrap")?;
    let expected = format!(
        "127.0.0.1:{base},127.0.0.1:{},127.0.0.1:{}",
        base + 100,
        base + 200
    );
    ensure!(bootstrap == expected, "bootstrap {bootstrap}");
    create_replicated_blocking(&bootstrap, "tried", 2, 3)?;
    produce(&bootstrap, "tried", 0, 50)?;
    for address in bootstrap.split(',') {
        let read = read_all(address, "tried", 2)?;
        ensure!(
            read.values().map(Vec::len).sum::<usize>() == 50,
            "from {address}"
        );
    }

    let sent = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()?;
    ensure!(sent.success());
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!("weir cluster local did not stop after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    ensure!(status.success(), "weir cluster local exited {status}");
    let rest: Vec<String> = rx.try_iter().collect();
    ensure!(
        rest.iter().any(|l| l == "every node stopped"),
        "stdout after the stop: {rest:?}"
    );
    for id in 1..=3 {
        ensure!(dir.path().join(format!("node-{id}/raft")).is_dir());
    }
    Ok(())
}

/// A port p such that p, p+1, p+2, p+100, p+101, p+102, p+200, p+201 and
/// p+202 are all free (each node's Kafka, controller and admin ports).
#[test]
fn cluster_local_json_says_when_the_nodes_are_ready_and_when_they_stopped() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let base = free_base_port()?;
    let mut child = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["cluster", "local", "--json", "--nodes", "1", "--port"])
        .arg(base.to_string())
        .arg("--data-dir")
        .arg(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let rx = stdout_lines(&mut child)?;
    let ready = match rx.recv_timeout(SETTLE_TIMEOUT) {
        Ok(line) => line,
        Err(_) => {
            let _ = child.kill();
            bail!("weir cluster local --json printed nothing");
        }
    };
    let ready: serde_json::Value = serde_json::from_str(&ready).context(ready)?;
    ensure!(ready["event"] == "ready", "{ready}");
    ensure!(ready["nodes"] == 1, "{ready}");
    ensure!(
        ready["bootstrap"] == format!("127.0.0.1:{base}").as_str(),
        "{ready}"
    );
    let admin = format!("127.0.0.1:{}", base + 2);
    ensure!(ready["admin"] == admin.as_str(), "{ready}");
    let health = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?
        .get(format!("http://{admin}/health"))
        .send()?;
    ensure!(health.status() == 200, "GET /health: {}", health.status());
    let sent = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()?;
    ensure!(sent.success());
    let stopped = rx
        .recv_timeout(SETTLE_TIMEOUT)
        .context("no line after the stop")?;
    ensure!(
        serde_json::from_str::<serde_json::Value>(&stopped)?["event"] == "stopped",
        "{stopped}"
    );
    ensure!(child.wait()?.success());
    Ok(())
}

/// The child's stdout, line by line, read on a thread of its own.
fn stdout_lines(
    child: &mut std::process::Child,
) -> anyhow::Result<std::sync::mpsc::Receiver<String>> {
    let stdout = child.stdout.take().context("stdout")?;
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    Ok(rx)
}

fn free_base_port() -> anyhow::Result<u16> {
    for _ in 0..100 {
        let base = common::reserve_port()?;
        if base > 60_000 {
            continue;
        }
        let all_free = [0, 1, 2, 100, 101, 102, 200, 201, 202]
            .iter()
            .all(|d| std::net::TcpListener::bind(("127.0.0.1", base + d)).is_ok());
        if all_free {
            return Ok(base);
        }
    }
    bail!("no free run of ports for weir cluster local")
}

#[test]
fn a_data_folder_keeps_the_kind_of_node_that_made_it() -> anyhow::Result<()> {
    let mut single = Broker::start(&[])?;
    single.stop()?;
    let dir = single.data_dir();
    let dir = dir.to_str().context("utf-8 path")?;
    let voters = format!("1@127.0.0.1:{}", common::reserve_port()?);
    let refused = cli::serve_expecting_exit(
        &[
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            dir,
            "--node-id",
            "1",
            "--voters",
            &voters,
        ],
        &[],
    )?;
    ensure!(refused.status.code() == Some(1), "{:?}", refused.status);
    let said = String::from_utf8_lossy(&refused.stderr);
    ensure!(said.contains("a one-node cluster (meta/)"), "{said}");

    for (args, message) in [
        (
            vec!["--node-id", "4", "--voters", voters.as_str()],
            "is not in --voters, so this node is an observer",
        ),
        (
            vec![
                "--process-roles",
                "broker",
                "--node-id",
                "1",
                "--voters",
                voters.as_str(),
            ],
            "needs an id that is not in --voters",
        ),
        (
            vec![
                "--process-roles",
                "broker",
                "--node-id",
                "4",
                "--voters",
                voters.as_str(),
            ],
            "needs --controller-listen",
        ),
        (
            vec![
                "--process-roles",
                "broker",
                "--node-id",
                "4",
                "--voters",
                voters.as_str(),
                "--controller-listen",
                "0.0.0.0:9093",
            ],
            "not a wildcard",
        ),
        (
            vec!["--process-roles", "controller"],
            "one-node cluster of its own",
        ),
        (vec!["--process-roles", "brokr"], "unknown role 'brokr'"),
    ] {
        let fresh = tempfile::tempdir()?;
        let mut all = vec!["--listen", "127.0.0.1:0", "--data-dir"];
        let path = fresh.path().to_str().context("utf-8 path")?;
        all.push(path);
        all.extend(args.iter().copied());
        let out = cli::serve_expecting_exit(&all, &[])?;
        ensure!(out.status.code() == Some(2), "{args:?}: {:?}", out.status);
        let said = String::from_utf8_lossy(&out.stderr);
        ensure!(said.contains(message), "{args:?}: {said}");
    }
    Ok(())
}

#[test]
fn a_consumer_that_gives_its_rack_reads_from_the_in_sync_replica_there() -> anyhow::Result<()> {
    use kafka_protocol::messages::FetchRequest;
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use rdkafka::Message;

    let nodes = start_cluster_with(
        3,
        &[
            "--set",
            "replica.selector.class=org.apache.kafka.common.replica.RackAwareReplicaSelector",
        ],
        |id| vec!["--rack".into(), format!("rack-{id}")],
    )?;
    let all = bootstrap(&nodes);
    create_replicated_blocking(&all, "near", 1, 3)?;
    let placed = wait_full_isr(&nodes, "near")?;
    produce(&all, "near", 0, 100)?;
    wait_full_isr(&nodes, "near")?;
    let leader = placed[&0].leader;
    let follower = placed[&0]
        .replicas
        .iter()
        .copied()
        .find(|r| *r != leader)
        .context("a follower")?;
    let rack = format!("rack-{follower}");
    let id = uuid::Uuid::parse_str(&topic_id(&all, "near")?)?;
    let fetch = |node: i32| -> anyhow::Result<(i32, i64, usize)> {
        let address = nodes[usize::try_from(node - 1)?].bootstrap();
        let mut client = weir_client::Client::connect(&address, &weir_client::Config::default())?;
        let request = FetchRequest::default()
            .with_replica_id((-1).into())
            .with_max_wait_ms(100)
            .with_min_bytes(1)
            .with_max_bytes(1 << 20)
            .with_rack_id(kafka_protocol::protocol::StrBytes::from_string(
                rack.clone(),
            ))
            .with_topics(vec![
                FetchTopic::default()
                    .with_topic_id(id)
                    .with_partitions(vec![
                        FetchPartition::default()
                            .with_partition(0)
                            .with_fetch_offset(0)
                            .with_partition_max_bytes(1 << 20),
                    ]),
            ]);
        let response = client.send(&request, 13)?;
        let p = response
            .responses
            .first()
            .and_then(|t| t.partitions.first())
            .context("no partition in the fetch answer")?;
        ensure!(
            p.error_code == 0,
            "broker {node} answered error {}",
            p.error_code
        );
        Ok((
            p.preferred_read_replica.0,
            p.high_watermark,
            p.records.as_ref().map_or(0, bytes::Bytes::len),
        ))
    };
    // The leader sends a consumer in the follower's rack there, with no records.
    let (preferred, _, bytes) = fetch(leader)?;
    ensure!(
        preferred == follower && bytes == 0,
        "leader answered {preferred} with {bytes} bytes"
    );
    // The follower serves it, up to its high watermark.
    let mut served = (0, 0, 0);
    wait_until(SETTLE_TIMEOUT, "the follower to serve the records", || {
        served = fetch(follower)?;
        Ok(served.1 == 100 && served.2 > 0)
    })?;
    ensure!(served.0 == -1, "a follower names no other replica");

    // librdkafka follows the same route, end to end.
    let mut config = common::consumer_config(&all);
    config.set("client.rack", &rack);
    let consumer: BaseConsumer = config.create()?;
    let mut at = TopicPartitionList::new();
    at.add_partition_offset("near", 0, Offset::Beginning)?;
    consumer.assign(&at)?;
    let mut read = Vec::new();
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    while read.len() < 100 && Instant::now() < deadline {
        if let Some(message) = consumer.poll(Duration::from_millis(200)) {
            let message = message?;
            read.push(String::from_utf8_lossy(message.payload().unwrap_or_default()).into_owned());
        }
    }
    let expected: Vec<String> = (0..100).map(|i| i.to_string()).collect();
    ensure!(
        read == expected,
        "read {} records through the rack-aware route",
        read.len()
    );
    Ok(())
}

/// Start broker-only node `id` (`--process-roles broker`, a learner of the
/// quorum) against `voters`, on reserved ports so a restart keeps them.
fn start_broker_only(id: u16, voters: &str) -> anyhow::Result<Broker> {
    let listen = format!("127.0.0.1:{}", common::reserve_port()?);
    let controller = format!("127.0.0.1:{}", common::reserve_port()?);
    let id = id.to_string();
    Broker::start_at(
        &listen,
        &[
            "--node-id",
            &id,
            "--voters",
            voters,
            "--process-roles",
            "broker",
            "--controller-listen",
            &controller,
        ],
    )
}

/// Make `__consumer_offsets` on the brokers `bootstrap` reaches, and wait
/// for it: a consumer with a group id makes it as soon as it asks for its
/// coordinator (`listed_brokers` does), so a broker started after this call
/// holds none of its replicas.
fn make_offsets_topic(bootstrap: &str) -> anyhow::Result<()> {
    wait_until(SETTLE_TIMEOUT, "__consumer_offsets to exist", || {
        let consumer: BaseConsumer = common::consumer_config(bootstrap).create()?;
        let metadata = consumer.fetch_metadata(Some("__consumer_offsets"), CLIENT_TIMEOUT)?;
        Ok(metadata
            .topics()
            .iter()
            .any(|t| t.error().is_none() && !t.partitions().is_empty()))
    })
}

/// The broker ids a node's Metadata answer lists, sorted.
fn listed_brokers(address: &str) -> anyhow::Result<Vec<i32>> {
    let consumer: BaseConsumer = common::consumer_config(address).create()?;
    let metadata = consumer.fetch_metadata(None, CLIENT_TIMEOUT)?;
    let mut ids: Vec<i32> = metadata.brokers().iter().map(|b| b.id()).collect();
    ids.sort_unstable();
    Ok(ids)
}

/// `weir cluster status --json`'s quorum voter and observer ids.
fn quorum_members(node: &Broker) -> anyhow::Result<(Vec<i64>, Vec<i64>)> {
    let status: serde_json::Value =
        serde_json::from_str(&cli::weir_ok(node, &["cluster", "status", "--json"], b"")?)?;
    let ids = |key: &str| -> Vec<i64> {
        let mut ids: Vec<i64> = status["quorum"][key]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v["id"].as_i64()).collect())
            .unwrap_or_default();
        ids.sort_unstable();
        ids
    };
    Ok((ids("voters"), ids("observers")))
}

/// Each quorum member's lag (voters, then observers) as the first node
/// whose `weir cluster status` reaches the quorum's leader says; `None`
/// when none does.
fn quorum_lags(nodes: &[Broker]) -> anyhow::Result<Option<Vec<(i64, i64)>>> {
    for node in nodes {
        let Ok(out) = cli::weir_ok(node, &["cluster", "status", "--json"], b"") else {
            continue;
        };
        let status: serde_json::Value = serde_json::from_str(&out)?;
        if status["quorum"]["leader"].as_i64().unwrap_or(-1) < 0 {
            continue;
        }
        let lags = quorum_rows(&status)
            .into_iter()
            .map(|m| {
                (
                    m["id"].as_i64().unwrap_or(-1),
                    m["lag"].as_i64().unwrap_or(-1),
                )
            })
            .collect();
        return Ok(Some(lags));
    }
    Ok(None)
}

#[test]
fn a_broker_only_node_holds_replicas_without_voting_and_rejoins_after_a_restart_or_a_wiped_disk()
-> anyhow::Result<()> {
    let (mut nodes, voters) = start_voters(3, &[], |_| Vec::new())?;
    let voters_only = bootstrap(&nodes[..3]);
    // Broker 4 holds only what this test gives it.
    make_offsets_topic(&voters_only)?;
    nodes.push(start_broker_only(4, &voters)?);
    wait_until(SETTLE_TIMEOUT, "broker 4 in Metadata", || {
        Ok(listed_brokers(&voters_only)? == [1, 2, 3, 4])
    })?;
    wait_until(SETTLE_TIMEOUT, "node 4 shown as an observer", || {
        Ok(quorum_members(&nodes[0])? == (vec![1, 2, 3], vec![4]))
    })?;

    // A topic placed on it: it leads and the voters follow.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let placed: &[&[i32]] = &[&[4, 1, 2]];
    let created = runtime.block_on(
        common::admin(&voters_only)?.create_topics(
            &[
                NewTopic::new("learned", 1, TopicReplication::Variable(placed))
                    .set("min.insync.replicas", "2"),
            ],
            &common::admin_options(),
        ),
    )?;
    ensure!(matches!(created.as_slice(), [Ok(_)]), "{created:?}");
    let described = wait_full_isr(&nodes, "learned")?;
    ensure!(described[&0].leader == 4, "{described:?}");
    let all = bootstrap(&nodes);
    ensure!(produce(&all, "learned", 0, 200)?.len() == 200);

    // Its death costs the quorum nothing: metadata still commits, and its
    // partition moves to an in-sync voter.
    nodes[3].sigkill()?;
    create_replicated_blocking(&voters_only, "after-learner-death", 1, 3)?;
    wait_until(SETTLE_TIMEOUT, "a voter to lead 'learned'", || {
        Ok(describe(&voters_only, "learned")?[&0].leader != 4)
    })?;
    ensure!(produce(&voters_only, "learned", 200, 100)?.len() == 100);

    // Restarted on its data folder, it rejoins as the same learner and
    // catches up to a full ISR.
    nodes[3].restart()?;
    wait_full_isr(&nodes, "learned")?;
    ensure!(quorum_members(&nodes[0])? == (vec![1, 2, 3], vec![4]));

    // Replaced with an empty disk under the same id: it takes the metadata
    // from the quorum again, registers, and copies the partition back.
    nodes[3].sigkill()?;
    std::fs::remove_dir_all(nodes[3].data_dir())?;
    ensure!(produce(&voters_only, "learned", 300, 100)?.len() == 100);
    nodes[3].restart()?;
    wait_full_isr(&nodes, "learned")?;
    // The quorum's leader met a learner whose log went back to empty and
    // started its replication over: no voter's Raft stopped, so a new
    // change reaches every voter and the observer.
    create_replicated_blocking(&voters_only, "after-the-wipe", 1, 3)?;
    wait_until(SETTLE_TIMEOUT, "every quorum member at lag 0", || {
        Ok(quorum_lags(&nodes)?
            .is_some_and(|lags| lags.len() == 4 && lags.iter().all(|(_, lag)| *lag == 0)))
    })?;
    ensure!(
        read_all(&all, "learned", 1)?[&0] == (0..400).collect::<Vec<_>>(),
        "every record, in order, through two lives of the broker-only node"
    );
    // It serves them itself once it leads again.
    cli::weir_ok(
        &nodes[0],
        &["cluster", "elect-leaders", "--topic", "learned"],
        b"",
    )?;
    wait_until(SETTLE_TIMEOUT, "broker 4 to lead 'learned' again", || {
        Ok(describe(&all, "learned")?[&0].leader == 4)
    })?;
    ensure!(read_all(&nodes[3].bootstrap(), "learned", 1)?[&0].len() == 400);
    Ok(())
}

#[test]
fn a_broker_is_unregistered_only_once_stopped_and_rid_of_its_replicas() -> anyhow::Result<()> {
    let (mut nodes, voters) = start_voters(3, &[], |_| Vec::new())?;
    let voters_only = bootstrap(&nodes[..3]);
    // Broker 4 holds only what this test gives it.
    make_offsets_topic(&voters_only)?;
    nodes.push(start_broker_only(4, &voters)?);
    wait_until(SETTLE_TIMEOUT, "broker 4 in Metadata", || {
        Ok(listed_brokers(&voters_only)? == [1, 2, 3, 4])
    })?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let placed: &[&[i32]] = &[&[4, 1]];
    let created = runtime.block_on(common::admin(&voters_only)?.create_topics(
        &[NewTopic::new(
            "leaving",
            1,
            TopicReplication::Variable(placed),
        )],
        &common::admin_options(),
    ))?;
    ensure!(matches!(created.as_slice(), [Ok(_)]), "{created:?}");
    wait_full_isr(&nodes, "leaving")?;
    ensure!(produce(&voters_only, "leaving", 0, 50)?.len() == 50);

    let unregister = |node: &Broker| cli::weir(node, &["cluster", "unregister", "--id", "4"], b"");
    // Alive: refused, and it stays.
    let alive = unregister(&nodes[0])?;
    let said = String::from_utf8_lossy(&alive.stderr);
    ensure!(
        alive.status.code() == Some(1)
            && said.contains("(error code 42)")
            && said.contains("alive"),
        "{:?}: {said}",
        alive.status
    );
    // Stopped, but still a replica: refused, naming the partition.
    nodes[3].stop()?;
    wait_until(SETTLE_TIMEOUT, "broker 4 to be fenced", || {
        Ok(listed_brokers(&voters_only)? == [1, 2, 3])
    })?;
    let holding = unregister(&nodes[0])?;
    let said = String::from_utf8_lossy(&holding.stderr);
    ensure!(
        holding.status.code() == Some(1) && said.contains("leaving-0"),
        "{:?}: {said}",
        holding.status
    );
    // Moved away, it is unregistered: gone from the brokers and the quorum.
    cli::weir_ok(
        &nodes[0],
        &[
            "topic",
            "reassign",
            "leaving",
            "--partition",
            "0:1,2",
            "--wait",
            "60",
        ],
        b"",
    )?;
    let done = cli::weir_ok(
        &nodes[1],
        &["cluster", "unregister", "--id", "4", "--json"],
        b"",
    )?;
    ensure!(done.trim() == r#"{"unregistered":4}"#, "{done}");
    let status: serde_json::Value = serde_json::from_str(&cli::weir_ok(
        &nodes[2],
        &["cluster", "status", "--json"],
        b"",
    )?)?;
    let brokers: Vec<i64> = status["brokers"]
        .as_array()
        .context("brokers")?
        .iter()
        .filter_map(|b| b["id"].as_i64())
        .collect();
    ensure!(
        brokers == [1, 2, 3],
        "DescribeCluster still names it: {status}"
    );
    wait_until(
        SETTLE_TIMEOUT,
        "node 4 to leave the quorum's observers",
        || Ok(quorum_members(&nodes[0])?.1.is_empty()),
    )?;
    ensure!(read_all(&voters_only, "leaving", 1)?[&0] == (0..50).collect::<Vec<_>>());
    // Unknown now: BROKER_ID_NOT_REGISTERED (102). Alive was INVALID_REQUEST (42).
    let again = unregister(&nodes[0])?;
    let said = String::from_utf8_lossy(&again.stderr);
    ensure!(
        again.status.code() == Some(1) && said.contains("(error code 102)"),
        "{:?}: {said}",
        again.status
    );
    // A single node has no broker to remove and does not advertise the API
    // (the cluster's answers above came through ApiVersions' list).
    let single = Broker::start(&[])?;
    let unserved = unregister(&single)?;
    let said = String::from_utf8_lossy(&unserved.stderr);
    ensure!(
        unserved.status.code() == Some(1) && said.contains("UnregisterBroker"),
        "{:?}: {said}",
        unserved.status
    );
    Ok(())
}

/// `weir cluster status --json`'s directory id of each quorum member (voters
/// and observers), by node id.
fn directory_ids(node: &Broker) -> anyhow::Result<BTreeMap<i64, String>> {
    let status: serde_json::Value =
        serde_json::from_str(&cli::weir_ok(node, &["cluster", "status", "--json"], b"")?)?;
    Ok(quorum_rows(&status)
        .into_iter()
        .filter_map(|m| Some((m["id"].as_i64()?, m["directory_id"].as_str()?.to_owned())))
        .collect())
}

/// A `weir cluster status --json` document's quorum members: the voters,
/// then the observers.
fn quorum_rows(status: &serde_json::Value) -> Vec<serde_json::Value> {
    ["voters", "observers"]
        .iter()
        .flat_map(|key| {
            status["quorum"][key]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .collect()
}

/// Start voter `id` of `node` again on its (emptied) data folder with
/// `args`, and check the start is refused, naming what to do.
fn refused_as_a_lost_voter(node: &Broker, id: u16, args: &[&str]) -> anyhow::Result<()> {
    let data_dir = node.data_dir();
    let id = id.to_string();
    let listen = node.bootstrap();
    let mut all = vec![
        "--node-id",
        id.as_str(),
        "--listen",
        listen.as_str(),
        "--data-dir",
        data_dir.to_str().context("data dir")?,
    ];
    all.extend_from_slice(args);
    let refused = cli::serve_expecting_exit(&all, &[])?;
    let said = String::from_utf8_lossy(&refused.stderr);
    ensure!(
        refused.status.code() == Some(1)
            && said.contains(&format!(
                "weir cluster remove-controller --controller-id {id}"
            )),
        "{:?}: {said}",
        refused.status
    );
    Ok(())
}

#[test]
fn a_voter_that_lost_its_data_is_refused_until_removed_and_added_back_as_a_new_controller()
-> anyhow::Result<()> {
    let (mut nodes, voters) = start_voters(3, &[], |_| Vec::new())?;
    let all = bootstrap(&nodes);
    create_replicated_blocking(&all, "kept", 1, 3)?;
    ensure!(produce(&all, "kept", 0, 100)?.len() == 100);
    let before = directory_ids(&nodes[0])?;
    ensure!(
        before.len() == 3 && before.values().all(|d| d.len() == 22),
        "every voter is shown with its directory id: {before:?}"
    );

    // Node 3 loses its data folder. Started again as voter 3, it is refused
    // before it answers any Raft request, and says what to do.
    nodes[2].sigkill()?;
    std::fs::remove_dir_all(nodes[2].data_dir())?;
    refused_as_a_lost_voter(&nodes[2], 3, &["--voters", &voters])?;
    let survivors = bootstrap(&nodes[..2]);
    create_replicated_blocking(&survivors, "while-refused", 1, 2)?;

    // Removing a voter that is not one: VOTER_NOT_FOUND (127), also for
    // voter 3 under another directory than its own.
    let remove = |args: &[&str]| {
        let mut all_args = vec!["cluster", "remove-controller"];
        all_args.extend_from_slice(args);
        cli::weir(&nodes[0], &all_args, b"")
    };
    for wrong in [
        vec!["--controller-id", "9"],
        vec![
            "--controller-id",
            "3",
            "--controller-directory-id",
            before[&1].as_str(),
        ],
    ] {
        let out = remove(&wrong)?;
        let said = String::from_utf8_lossy(&out.stderr);
        ensure!(
            out.status.code() == Some(1) && said.contains("(error code 127)"),
            "{wrong:?}: {:?}: {said}",
            out.status
        );
    }
    let removed = remove(&[
        "--controller-id",
        "3",
        "--controller-directory-id",
        before[&3].as_str(),
    ])?;
    ensure!(
        removed.status.success(),
        "{}",
        String::from_utf8_lossy(&removed.stderr)
    );
    ensure!(quorum_members(&nodes[0])? == (vec![1, 2], vec![3]));

    // Started again on its empty folder, it joins as an observer with a new
    // directory, takes the metadata, and copies its partition back.
    nodes[2].restart()?;
    wait_full_isr(&nodes, "kept")?;
    let rejoined = directory_ids(&nodes[0])?;
    ensure!(
        rejoined.get(&3).is_some_and(|d| *d != before[&3]),
        "{rejoined:?} against {before:?}"
    );
    // Adding a voter that already votes: DUPLICATE_VOTER (126).
    let duplicate = cli::weir(
        &nodes[0],
        &["cluster", "add-controller", "--controller-id", "1"],
        b"",
    )?;
    let said = String::from_utf8_lossy(&duplicate.stderr);
    ensure!(
        duplicate.status.code() == Some(1) && said.contains("(error code 126)"),
        "{:?}: {said}",
        duplicate.status
    );
    let added = cli::weir_ok(
        &nodes[1],
        &[
            "cluster",
            "add-controller",
            "--controller-id",
            "3",
            "--json",
        ],
        b"",
    )?;
    ensure!(added.trim() == r#"{"added":3}"#, "{added}");
    ensure!(quorum_members(&nodes[0])? == (vec![1, 2, 3], vec![]));

    // It votes: without node 1, nodes 2 and 3 are a majority of the three
    // voters, so metadata still commits and node 1's leaderships move.
    nodes[0].sigkill()?;
    let rest = bootstrap(&nodes[1..]);
    create_replicated_blocking(&rest, "after-the-replacement", 1, 2)?;
    ensure!(produce(&rest, "kept", 100, 100)?.len() == 100);
    ensure!(
        read_all(&rest, "kept", 1)?[&0] == (0..200).collect::<Vec<_>>(),
        "every record, once and in order, through the replacement"
    );

    // A controller with a new id joins as an observer and is added. With
    // node 1 still gone, four voters need nodes 2, 3 and 4 to commit.
    let listen = format!("127.0.0.1:{}", common::reserve_port()?);
    let controller_listen = format!("127.0.0.1:{}", common::reserve_port()?);
    let mut fourth = Broker::start_at(
        &listen,
        &[
            "--node-id",
            "4",
            "--voters",
            &voters,
            "--controller-listen",
            &controller_listen,
        ],
    )?;
    ensure!(quorum_members(&nodes[1])? == (vec![1, 2, 3], vec![4]));
    cli::weir_ok(
        &nodes[1],
        &["cluster", "add-controller", "--controller-id", "4"],
        b"",
    )?;
    ensure!(quorum_members(&nodes[1])? == (vec![1, 2, 3, 4], vec![]));
    create_replicated_blocking(&rest, "four-voters", 1, 2)?;

    // A voter added by id that loses its folder is refused the same way
    // (once a majority of the four is back to answer).
    nodes[0].restart()?;
    fourth.sigkill()?;
    std::fs::remove_dir_all(fourth.data_dir())?;
    refused_as_a_lost_voter(
        &fourth,
        4,
        &[
            "--voters",
            &voters,
            "--controller-listen",
            &controller_listen,
        ],
    )?;
    Ok(())
}

/// A `weir serve` child that is not a broker (no `listening on` line for
/// [`Broker`] to wait for); killed on drop.
struct ControllerOnly(std::process::Child);

impl Drop for ControllerOnly {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_controller_only_voter_counts_toward_the_quorum_without_a_broker() -> anyhow::Result<()> {
    let controllers: Vec<u16> = (0..3)
        .map(|_| common::reserve_port())
        .collect::<anyhow::Result<_>>()?;
    let voters = (1..=3)
        .zip(&controllers)
        .map(|(id, port)| format!("{id}@127.0.0.1:{port}"))
        .collect::<Vec<_>>()
        .join(",");
    let dir = tempfile::tempdir()?;
    let mut child = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["serve", "--node-id", "3", "--process-roles", "controller"])
        // A controller-only node has no admin API; said outright all the same.
        .args(["--admin-listen", "none"])
        .args(["--voters", &voters, "--data-dir"])
        .arg(dir.path())
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let stdout = child.stdout.take().context("no stdout")?;
    let controller = ControllerOnly(child);
    let combined: Vec<_> = (1..=2)
        .map(|id| {
            let voters = voters.clone();
            std::thread::spawn(move || {
                let id = id.to_string();
                Broker::start(&["--node-id", &id, "--voters", &voters])
            })
        })
        .collect();
    let said = BufReader::new(stdout)
        .lines()
        .next()
        .context("the controller-only node said nothing")??;
    ensure!(said.starts_with("controller listening on"), "{said}");
    let mut nodes = Vec::new();
    for handle in combined {
        nodes.push(
            handle
                .join()
                .map_err(|_| anyhow::anyhow!("a node's start thread panicked"))??,
        );
    }
    let all = bootstrap(&nodes);
    wait_until(SETTLE_TIMEOUT, "brokers 1 and 2 in Metadata", || {
        Ok(listed_brokers(&all)? == [1, 2])
    })?;
    ensure!(quorum_members(&nodes[0])? == (vec![1, 2, 3], vec![]));
    // Until the controller-only node leads, make the combined leader lose
    // leadership (each election among the two left is node 3's at even
    // odds). Bounded by rounds, not by one settle timeout: a round (kill,
    // election, restart) takes seconds, and six lost coin tosses in a row
    // (1 in 64) used to run out a 60 s wait; 40 rounds lose 1 in 10^12.
    let quorum_leader = |node: &Broker| -> anyhow::Result<i64> {
        let status: serde_json::Value =
            serde_json::from_str(&cli::weir_ok(node, &["cluster", "status", "--json"], b"")?)?;
        Ok(status["quorum"]["leader"].as_i64().unwrap_or(-1))
    };
    let mut rounds = 0;
    wait_until(
        SETTLE_TIMEOUT * 40,
        "the controller-only node to lead",
        || {
            let leader = quorum_leader(&nodes[0]).or_else(|_| quorum_leader(&nodes[1]))?;
            if let Some(index) = [1, 2].iter().position(|id| *id == leader) {
                rounds += 1;
                ensure!(rounds <= 40, "node 3 lost 40 elections in a row");
                nodes[index].sigkill()?;
                let other = &nodes[1 - index];
                wait_until(SETTLE_TIMEOUT, "a new quorum leader", || {
                    Ok(quorum_leader(other).is_ok_and(|l| l > 0 && l != leader))
                })?;
                nodes[index].restart()?;
            }
            Ok(leader == 3)
        },
    )?;
    // Clients are told of a controller they can reach (a broker, which
    // forwards to the quorum): librdkafka's admin client sends CreateTopics
    // there, and would time out on the controller-only leader.
    create_replicated_blocking(&all, "led-by-a-controller", 1, 2)?;
    // With node 1 gone, nodes 2 and 3 are the majority: metadata commits.
    nodes[0].sigkill()?;
    create_replicated_blocking(&nodes[1].bootstrap(), "after-voter-death", 1, 1)?;
    drop(controller);
    Ok(())
}

/// What the node `node` holds of partition 0 of the topic `id`, through a
/// consumer's Fetch from offset `at` (KIP-392 lets a follower answer one
/// from its own copy): its own log start, its high watermark, and the
/// number each record from `at` on carries.
fn served_by(node: &Broker, id: uuid::Uuid, at: i64) -> anyhow::Result<(i64, i64, Vec<u64>)> {
    use kafka_protocol::messages::FetchRequest;
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::records::RecordBatchDecoder;

    let mut client =
        weir_client::Client::connect(&node.bootstrap(), &weir_client::Config::default())?;
    let request = FetchRequest::default()
        .with_replica_id((-1).into())
        .with_max_wait_ms(0)
        .with_min_bytes(0)
        .with_max_bytes(4 << 20)
        .with_topics(vec![
            FetchTopic::default()
                .with_topic_id(id)
                .with_partitions(vec![
                    FetchPartition::default()
                        .with_partition(0)
                        .with_fetch_offset(at)
                        .with_partition_max_bytes(4 << 20),
                ]),
        ]);
    let response = client.send(&request, 13)?;
    let p = response
        .responses
        .first()
        .and_then(|t| t.partitions.first())
        .context("no partition in the fetch answer")?;
    ensure!(p.error_code == 0, "error {} at offset {at}", p.error_code);
    let mut bytes = p.records.clone().unwrap_or_default();
    let mut values = Vec::new();
    for set in RecordBatchDecoder::decode_all(&mut bytes)? {
        for record in set.records.iter().filter(|r| r.offset >= at) {
            let value = record.value.as_deref().unwrap_or_default();
            values.push(std::str::from_utf8(value)?.parse::<u64>()?);
        }
    }
    Ok((p.log_start_offset, p.high_watermark, values))
}

/// DeleteRecords on partition 0 of `topic` up to `offset`, through `bootstrap`.
fn delete_records_before(bootstrap: &str, topic: &str, offset: i64) -> anyhow::Result<()> {
    let mut before = TopicPartitionList::new();
    before.add_partition_offset(topic, 0, Offset::Offset(offset))?;
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(async {
            let admin = common::admin(bootstrap)?;
            anyhow::Ok(
                admin
                    .delete_records(&before, &common::admin_options())
                    .await?,
            )
        })?;
    for element in result.elements() {
        element
            .error()
            .map_err(|e| anyhow::anyhow!("DeleteRecords: {e}"))?;
    }
    Ok(())
}

/// Followers follow their leader's log start: one that missed a
/// DeleteRecords while it was down starts its log afresh at the leader's
/// log start and rejoins the ISR, one that was up moves its own log start,
/// a replica a reassignment adds starts there too, and after the leader's
/// death the new leader starts where the old one did.
#[test]
fn deleted_records_stay_deleted_on_every_replica_and_across_a_failover() -> anyhow::Result<()> {
    // A dead follower leaves the ISR after the lag time, not its session.
    let mut nodes = start_cluster(3, &["--set", "replica.lag.time.max.ms=2000"])?;
    let all = bootstrap(&nodes);
    create_replicated_blocking(&all, "trimmed", 1, 3)?;
    let placed = wait_full_isr(&nodes, "trimmed")?;
    let leader = placed[&0].leader;
    let followers: Vec<i32> = placed[&0]
        .replicas
        .iter()
        .copied()
        .filter(|r| *r != leader)
        .collect();
    let [away, stayed] = followers[..] else {
        bail!("two followers expected: {placed:?}");
    };
    let node = |id: i32| usize::try_from(id - 1);
    let id = uuid::Uuid::parse_str(&topic_id(&all, "trimmed")?)?;

    let mut landed = produce(&all, "trimmed", 0, 100)?;
    nodes[node(away)?].sigkill()?;
    // acks=all: answered once the dead follower has left the ISR.
    landed.extend(produce(&all, "trimmed", 100, 200)?);
    // Past everything the dead follower holds.
    const START: i64 = 250;
    delete_records_before(&nodes[node(leader)?].bootstrap(), "trimmed", START)?;
    let mut from_start: Vec<(i64, u64)> = landed
        .iter()
        .zip(0u64..)
        .filter(|((_, offset), _)| *offset >= START)
        .map(|((_, offset), value)| (*offset, value))
        .collect();
    from_start.sort_unstable();
    let from_start: Vec<u64> = from_start.into_iter().map(|(_, v)| v).collect();

    // The live follower moves its own log start to the leader's.
    wait_until(
        SETTLE_TIMEOUT,
        "the live follower's log start to reach the leader's",
        || Ok(served_by(&nodes[node(stayed)?], id, START)?.0 == START),
    )?;
    // The dead one comes back below the leader's log start: it starts its
    // log there, catches up, and rejoins the ISR with exactly those records.
    nodes[node(away)?].restart()?;
    wait_full_isr(&nodes, "trimmed")?;
    for replica in [leader, stayed, away] {
        let mut served = (0, 0, Vec::new());
        wait_until(
            SETTLE_TIMEOUT,
            "every replica to hold the same records",
            || {
                served = served_by(&nodes[node(replica)?], id, START)?;
                Ok(served.1 == 300)
            },
        )?;
        ensure!(
            served.0 == START && served.2 == from_start,
            "broker {replica} starts at {} and holds {} records from {START}; expected {}",
            served.0,
            served.2.len(),
            from_start.len()
        );
    }

    // A new replica of a partition whose log no longer starts at 0 starts
    // at the leader's log start too, and the reassignment completes.
    create_replicated_blocking(&all, "grown", 1, 2)?;
    let before = wait_full_isr(&nodes, "grown")?;
    produce(&all, "grown", 0, 100)?;
    delete_records_before(&all, "grown", 60)?;
    let added = (1..=3)
        .find(|b| !before[&0].replicas.contains(b))
        .context("a broker without a replica")?;
    let spec = format!(
        "0:{},{},{added}",
        before[&0].replicas[0], before[&0].replicas[1]
    );
    cli::weir_ok(
        &nodes[0],
        &[
            "topic",
            "reassign",
            "grown",
            "--partition",
            &spec,
            "--wait",
            "60",
        ],
        b"",
    )?;
    wait_full_isr(&nodes, "grown")?;
    let grown = uuid::Uuid::parse_str(&topic_id(&all, "grown")?)?;
    let served = served_by(&nodes[node(added)?], grown, 60)?;
    ensure!(
        served.0 == 60 && served.2 == (60..100).collect::<Vec<u64>>(),
        "the new replica starts at {} and holds {} records from 60",
        served.0,
        served.2.len()
    );

    // The leader dies: whoever takes over starts where it did.
    nodes[node(leader)?].sigkill()?;
    let alive = [away, stayed]
        .iter()
        .map(|r| Ok(nodes[node(*r)?].bootstrap()))
        .collect::<anyhow::Result<Vec<_>>>()?
        .join(",");
    // A client that learned of the dead leader before it was fenced sends
    // it ListOffsets until its own timeout (librdkafka does not look the
    // leader up again for a watermark query): ask with a fresh one each
    // time, once Metadata names a live leader.
    wait_until(SETTLE_TIMEOUT, "a live leader", || {
        Ok(describe(&alive, "trimmed")?
            .get(&0)
            .is_some_and(|d| d.leader != leader && d.leader > 0))
    })?;
    let mut low = -1;
    wait_until(SETTLE_TIMEOUT, "a new leader's earliest offset", || {
        let consumer: BaseConsumer = common::consumer_config(&alive).create()?;
        low = consumer
            .fetch_watermarks("trimmed", 0, Duration::from_secs(5))
            .map_or(-1, |(low, _)| low);
        Ok(low >= 0)
    })?;
    ensure!(low == START, "the new leader's log starts at {low}");
    let read = read_all(&alive, "trimmed", 1)?;
    ensure!(
        read.get(&0) == Some(&from_start),
        "a consumer from the beginning read {:?} records, expected those from {START}",
        read.get(&0).map(Vec::len)
    );
    Ok(())
}

/// The node id FindCoordinator names for `key` of `key_type` (0 a group,
/// 1 a transactional id), once it names one.
fn coordinator_of(bootstrap: &str, key_type: i8, key: &str) -> anyhow::Result<i32> {
    use kafka_protocol::messages::FindCoordinatorRequest;
    let address = bootstrap.split(',').next().context("an address")?;
    let mut found = None;
    wait_until(SETTLE_TIMEOUT, "a coordinator", || {
        let mut client = weir_client::Client::connect(address, &weir_client::Config::default())?;
        let request = FindCoordinatorRequest::default()
            .with_key_type(key_type)
            .with_coordinator_keys(vec![kafka_protocol::protocol::StrBytes::from_string(
                key.to_string(),
            )]);
        let response = client.send(&request, 4)?;
        found = response
            .coordinators
            .first()
            .filter(|c| c.error_code == 0)
            .map(|c| c.node_id.0);
        Ok(found.is_some())
    })?;
    found.context("no coordinator")
}

/// The values a read_committed consumer reads from `topic`, sorted, up to
/// each partition's last stable offset. A transaction's last record is its
/// marker, never delivered: the read ends when the position, which moves
/// past it, reaches the end.
fn read_committed(bootstrap: &str, topic: &str, partitions: i32) -> anyhow::Result<Vec<u64>> {
    let consumer: BaseConsumer = common::consumer_config(bootstrap)
        .set("isolation.level", "read_committed")
        .create()?;
    let mut assignment = TopicPartitionList::new();
    let mut ends = HashMap::new();
    for p in 0..partitions {
        let (low, end) = consumer.fetch_watermarks(topic, p, CLIENT_TIMEOUT)?;
        ends.insert(p, end);
        assignment.add_partition_offset(topic, p, Offset::Offset(low))?;
    }
    consumer.assign(&assignment)?;
    let mut values = Vec::new();
    wait_until(CLIENT_TIMEOUT, "reading to the last stable offsets", || {
        if let Some(message) = consumer.poll(Duration::from_millis(100)) {
            let message = message?;
            let text =
                std::str::from_utf8(rdkafka::Message::payload(&message).unwrap_or_default())?;
            values.push(text.parse::<u64>()?);
        }
        Ok(consumer.position()?.elements().iter().all(|e| {
            let end = ends.get(&e.partition()).copied().unwrap_or(0);
            match e.offset() {
                Offset::Offset(at) => at >= end,
                _ => end == 0,
            }
        }))
    })?;
    values.sort_unstable();
    Ok(values)
}

#[test]
fn transactions_span_brokers_and_survive_the_death_of_their_coordinator() -> anyhow::Result<()> {
    use rdkafka::producer::{DefaultProducerContext, Producer, ThreadedProducer};
    let mut nodes = start_cluster(
        3,
        &[
            "--set",
            "transaction.state.log.num.partitions=3",
            "--set",
            "transaction.abort.timed.out.transaction.cleanup.interval.ms=200",
        ],
    )?;
    let all = bootstrap(&nodes);
    // Three partitions, led by different brokers: each transaction's
    // markers go to leaders other than its coordinator.
    create_replicated_blocking(&all, "ledger", 3, 3)?;
    let ledger = wait_full_isr(&nodes, "ledger")?;
    let leaders: std::collections::BTreeSet<i32> = ledger.values().map(|d| d.leader).collect();
    ensure!(
        leaders.len() > 1,
        "the partitions' leaders are spread: {ledger:?}"
    );

    let timeout = Duration::from_secs(60);
    let producer: ThreadedProducer<DefaultProducerContext> = common::producer_config(&all)
        .set("transactional.id", "ledger-tx")
        .set("transaction.timeout.ms", "60000")
        .create()?;
    producer.init_transactions(timeout)?;
    let send = |value: u64| -> anyhow::Result<()> {
        let text = value.to_string();
        let partition = i32::try_from(value % 3)?;
        producer
            .send(
                BaseRecord::to("ledger")
                    .partition(partition)
                    .key(&text)
                    .payload(&text),
            )
            .map_err(|(e, _)| e)?;
        Ok(())
    };
    let mut committed = std::collections::BTreeSet::new();
    for t in 0..10u64 {
        producer.begin_transaction()?;
        for r in 0..3 {
            send(t * 10 + r)?;
        }
        if t % 3 == 2 {
            producer.flush(timeout)?;
            producer.abort_transaction(timeout)?;
        } else {
            producer.commit_transaction(timeout)?;
            committed.extend((0..3).map(|r| t * 10 + r));
        }
    }

    // A partition leader checks a transactional batch with the coordinator
    // on another broker (KIP-890): one the coordinator has not added to an
    // open transaction is refused.
    let coordinator = coordinator_of(&all, 1, "ledger-tx")?;
    let described: serde_json::Value = serde_json::from_str(&cli::weir_ok(
        &nodes[0],
        &["txn", "describe", "ledger-tx", "--json"],
        b"",
    )?)?;
    let pid = described["producer_id"].as_i64().context("producer_id")?;
    let epoch = i16::try_from(
        described["producer_epoch"]
            .as_i64()
            .context("producer_epoch")?,
    )?;
    let (&partition, elsewhere) = ledger
        .iter()
        .find(|(_, d)| d.leader != coordinator)
        .context("a partition led by another broker than the coordinator")?;
    let mut raw = common::raw::RawClient::connect(
        &nodes[usize::try_from(elsewhere.leader - 1)?].bootstrap(),
    )?;
    let mut stray =
        common::raw::produce_request("ledger", partition, common::raw::txn_batch((pid, epoch))?);
    stray.transactional_id = Some(kafka_protocol::messages::TransactionalId(
        "ledger-tx".to_string().into(),
    ));
    assert_eq!(
        common::raw::produce_error(&raw.call(&stray, 9)?)?,
        kafka_protocol::ResponseError::InvalidTxnState.code(),
        "a batch outside any open transaction, verified with broker {coordinator}"
    );

    // Transaction version 2 (a Java client 4.0+): the partition's leader
    // adds the partition with the coordinator on another broker, and the
    // markers there carry the epoch EndTxn v5 bumped, which fences a late
    // batch of the ended transaction.
    use kafka_protocol::messages::{EndTxnRequest, TransactionalId};
    let tv2_id = || TransactionalId("ledger-tv2".to_string().into());
    let tv2_coordinator = coordinator_of(&all, 1, "ledger-tv2")?;
    let (&partition, elsewhere) = ledger
        .iter()
        .find(|(_, d)| d.leader != tv2_coordinator)
        .context("a partition led by another broker than the coordinator")?;
    let mut at_coordinator =
        common::raw::RawClient::connect(&nodes[usize::try_from(tv2_coordinator - 1)?].bootstrap())?;
    let mut at_leader = common::raw::RawClient::connect(
        &nodes[usize::try_from(elsewhere.leader - 1)?].bootstrap(),
    )?;
    let init = common::raw::init_producer_id(&mut at_coordinator, "ledger-tv2", 60_000)?;
    assert_eq!(init.error_code, 0);
    let tv2 = (init.producer_id.0, init.producer_epoch);
    let produce_v12 = |raw: &mut common::raw::RawClient, epoch: i16, seq: i32, value: &str| {
        let mut request = common::raw::produce_request(
            "ledger",
            partition,
            common::raw::txn_record((tv2.0, epoch), seq, value)?,
        );
        request.transactional_id = Some(tv2_id());
        common::raw::produce_error(&raw.call(&request, 12)?)
    };
    assert_eq!(produce_v12(&mut at_leader, tv2.1, 0, "5000")?, 0);
    let ended = at_coordinator.call(
        &EndTxnRequest::default()
            .with_transactional_id(tv2_id())
            .with_producer_id(tv2.0.into())
            .with_producer_epoch(tv2.1)
            .with_committed(true),
        5,
    )?;
    assert_eq!(
        (ended.error_code, ended.producer_id.0, ended.producer_epoch),
        (0, tv2.0, tv2.1 + 1)
    );
    committed.insert(5000);
    assert_eq!(
        produce_v12(&mut at_leader, tv2.1, 1, "5001")?,
        kafka_protocol::ResponseError::InvalidProducerEpoch.code(),
        "a late batch of the committed transaction"
    );

    // A transaction in flight when its coordinator dies: its records are
    // written, its state replicated; the commit goes to the new coordinator.
    producer.begin_transaction()?;
    for r in 0..3 {
        send(1000 + r)?;
    }
    producer.flush(timeout)?;
    wait_full_isr(&nodes, "__transaction_state")?;
    let victim = coordinator_of(&all, 1, "ledger-tx")?;
    nodes[usize::try_from(victim - 1)?].sigkill()?;
    let outcome = producer.commit_transaction(timeout);
    if outcome.is_ok() {
        committed.extend(1000..1003);
    }

    let alive = bootstrap_alive(&nodes);
    ensure!(
        coordinator_of(&alive, 1, "ledger-tx")? != victim,
        "a new coordinator took over"
    );
    // read_committed (librdkafka's default isolation) once every
    // transaction has ended: its last stable offsets reach the ends.
    let mut read: Vec<u64> = Vec::new();
    wait_until(SETTLE_TIMEOUT, "the committed records, once each", || {
        read = match read_committed(&alive, "ledger", 3) {
            Ok(read) => read,
            Err(err) => {
                eprintln!("not read yet: {err:#}");
                return Ok(false);
            }
        };
        Ok(read
            .iter()
            .copied()
            .collect::<std::collections::BTreeSet<_>>()
            == committed)
    })
    .with_context(|| format!("commit after the coordinator's death: {outcome:?}; read {read:?}"))?;
    assert_eq!(read.len(), committed.len(), "each committed record once");
    ensure!(
        outcome.is_ok(),
        "the commit after the failover: {outcome:?}"
    );
    Ok(())
}

/// Produce `count` records (values `0..count`) to partition 0 of `topic`,
/// record `i` delayed by `delay_ms(i)`, with acks=all and an idempotent
/// producer.
fn produce_delayed(
    bootstrap: &str,
    topic: &str,
    count: u64,
    delay_ms: impl Fn(u64) -> u64,
) -> anyhow::Result<()> {
    let mut config = common::producer_config(bootstrap);
    config.set("enable.idempotence", "true");
    let producer = common::tracked_producer(&config)?;
    for id in 0..count {
        let value = id.to_string();
        let delay = delay_ms(id).to_string();
        let headers = rdkafka::message::OwnedHeaders::new().insert(rdkafka::message::Header {
            key: "weir.delay-ms",
            value: Some(&delay),
        });
        common::send_tracked(
            &producer,
            BaseRecord::with_opaque_to(topic, Box::new(id))
                .partition(0)
                .key(value.as_bytes())
                .payload(value.as_bytes())
                .headers(headers),
        )?;
    }
    common::flush_all_delivered(&producer, usize::try_from(count)?)?;
    Ok(())
}

/// The delivered copies of partition 0 of `topic` read through `bootstrap`
/// from offset 0 until `count` distinct records were delivered (and a
/// little longer, for any duplicate to show): how many copies each value
/// has.
fn delivered_copies(
    bootstrap: &str,
    topic: &str,
    count: usize,
) -> anyhow::Result<BTreeMap<u64, usize>> {
    use rdkafka::message::{Headers, Message};
    let consumer: BaseConsumer = common::consumer_config(bootstrap).create()?;
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(topic, 0, Offset::Offset(0))?;
    consumer.assign(&assignment)?;
    let mut copies: BTreeMap<u64, usize> = BTreeMap::new();
    let mut settle: Option<Instant> = None;
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    while settle.is_none_or(|s| s.elapsed() < Duration::from_secs(2)) {
        ensure!(
            Instant::now() < deadline,
            "{} of {count} delayed records delivered",
            copies.len()
        );
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            // The dead leader, until the consumer learns the new one.
            Some(Err(rdkafka::error::KafkaError::MessageConsumption(
                rdkafka::types::RDKafkaErrorCode::BrokerTransportFailure,
            ))) => {}
            Some(Err(e)) => bail!("consumer error: {e}"),
            Some(Ok(m)) => {
                let copy = m
                    .headers()
                    .is_some_and(|h| h.iter().any(|h| h.key == "weir.delayed-from-offset"));
                ensure!(copy, "a pending record was served at offset {}", m.offset());
                let value: u64 = std::str::from_utf8(m.payload().unwrap_or_default())?.parse()?;
                *copies.entry(value).or_default() += 1;
            }
        }
        if settle.is_none() && copies.len() >= count {
            settle = Some(Instant::now());
        }
    }
    Ok(copies)
}

#[test]
fn delayed_records_are_delivered_once_across_the_death_of_their_leader() -> anyhow::Result<()> {
    const RECORDS: u64 = 300;
    let mut nodes = start_cluster(3, &[])?;
    let all = bootstrap(&nodes);
    create_replicated_blocking(&all, "later", 1, 3)?;
    let placed = wait_full_isr(&nodes, "later")?;
    // Due over 1 to 7 s, out of produce order.
    produce_delayed(&all, "later", RECORDS, |i| 1_000 + (i * 7_919) % 6_000)?;
    // The leader delivers some, then dies; a follower takes over the rest
    // from its own schedule, fed by what it replicated.
    std::thread::sleep(Duration::from_millis(2_500));
    let victim = usize::try_from(placed[&0].leader - 1)?;
    nodes[victim].sigkill()?;
    let alive = bootstrap_alive(&nodes);
    let copies = delivered_copies(&alive, "later", RECORDS as usize)?;
    let twice: Vec<u64> = copies
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(v, _)| *v)
        .collect();
    ensure!(twice.is_empty(), "delivered more than once: {twice:?}");
    ensure!(
        copies.keys().copied().eq(0..RECORDS),
        "every delayed record once: {} of {RECORDS}",
        copies.len()
    );
    // The old leader comes back as a follower and delivers nothing again.
    nodes[victim].restart()?;
    wait_full_isr(&nodes, "later")?;
    let again = delivered_copies(&bootstrap(&nodes), "later", RECORDS as usize)?;
    ensure!(again == copies, "after the old leader's return: {again:?}");
    Ok(())
}

#[test]
fn a_cancel_is_refused_by_a_follower_and_holds_after_its_leaders_death() -> anyhow::Result<()> {
    let mut nodes = start_cluster(3, &[])?;
    let all = bootstrap(&nodes);
    create_replicated_blocking(&all, "cancelled", 1, 3)?;
    let placed = wait_full_isr(&nodes, "cancelled")?;
    // Values 0, 1, 2 at offsets 0, 1, 2, due after 2, 6 and 7 s.
    produce_delayed(&all, "cancelled", 3, |i| [2_000, 6_000, 7_000][i as usize])?;
    let leader = placed[&0].leader;
    let victim = usize::try_from(leader - 1)?;
    let follower = &nodes[(victim + 1) % nodes.len()];
    let cancel = |node: &Broker| {
        cli::command(
            node,
            &[
                "delayed",
                "cancel",
                "cancelled",
                "--partition",
                "0",
                "--offset",
                "1",
            ],
        )
        .output()
    };
    // A follower sends the tool to the leader.
    let refused = cancel(follower)?;
    let err = String::from_utf8_lossy(&refused.stderr);
    ensure!(
        refused.status.code() == Some(1)
            && err.contains("does not lead")
            && err.contains(&format!("broker {leader} does")),
        "{:?} {err}",
        refused.status
    );
    // The leader commits the cancel to every replica, then dies.
    let done = cancel(&nodes[victim])?;
    ensure!(
        done.status.success(),
        "{:?} {}",
        done.status,
        String::from_utf8_lossy(&done.stderr)
    );
    nodes[victim].sigkill()?;
    // The new leader delivers 0 and 2, never 1: 2 is due after it.
    let copies = delivered_copies(&bootstrap_alive(&nodes), "cancelled", 2)?;
    ensure!(
        copies.keys().copied().eq([0, 2]),
        "delivered, with how many copies each: {copies:?}"
    );
    ensure!(copies.values().all(|n| *n == 1), "{copies:?}");
    Ok(())
}

/// Set share group `group` to start at the log start
/// (`share.auto.offset.reset=earliest`) with `weir group config set`.
fn share_from_the_log_start(nodes: &[Broker], group: &str) -> anyhow::Result<()> {
    let set = cli::weir(
        &nodes[0],
        &[
            "group",
            "config",
            "set",
            group,
            "share.auto.offset.reset=earliest",
            "--brokers",
            &bootstrap(nodes),
        ],
        b"",
    )?;
    ensure!(set.status.success(), "{set:?}");
    Ok(())
}

/// The `__dlq.errors.offset` header of each dead letter in `topic`, read
/// with `weir consume`, sorted; waits until there are at least `n`.
fn dead_letter_offsets(nodes: &[Broker], topic: &str, n: usize) -> anyhow::Result<Vec<String>> {
    let mut offsets = Vec::new();
    wait_until(SETTLE_TIMEOUT, "the dead letters", || {
        let out = cli::weir(
            nodes
                .iter()
                .find(|n| n.pid().is_some())
                .context("no node runs")?,
            &[
                "consume",
                topic,
                "--from-beginning",
                "--format",
                "json",
                "--brokers",
                &bootstrap_alive(nodes),
            ],
            b"",
        )?;
        offsets = String::from_utf8(out.stdout)?
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter_map(|r| {
                r["headers"]
                    .as_array()?
                    .iter()
                    .find(|h| h["key"] == "__dlq.errors.offset")
                    .and_then(|h| h["value"].as_str())
                    .map(str::to_string)
            })
            .collect();
        Ok(offsets.len() >= n)
    })?;
    offsets.sort();
    Ok(offsets)
}

#[test]
fn a_share_groups_dead_letters_reach_a_partition_another_broker_leads_once_across_a_move()
-> anyhow::Result<()> {
    use common::share::{ACCEPT, Member, REJECT};
    let mut nodes = start_cluster(3, &["--set", "group.share.enable=true"])?;
    let all = bootstrap(&nodes);
    // Node 1 writes dead letters, then stops before it confirms them
    // (built with failpoints, as CI builds the tests).
    nodes[0].sigkill()?;
    nodes[0].set_envs(&[("FAILPOINTS", "share::dead_letters_forwarded=pause")]);
    nodes[0].restart()?;
    wait_until(SETTLE_TIMEOUT, "node 1 back and unfenced", || {
        let consumer: BaseConsumer = common::consumer_config(&all).create()?;
        Ok(consumer
            .fetch_metadata(None, Duration::from_secs(5))
            .is_ok_and(|m| m.brokers().len() == 3))
    })?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let admin = common::admin(&all)?;
    // The source partition led by node 1, then node 3; its dead-letter
    // partition by node 2 (the first replica of a set leads).
    let created = runtime.block_on(
        admin.create_topics(
            &[
                NewTopic::new("shipments", 1, TopicReplication::Variable(&[&[1, 3]])),
                NewTopic::new("dlq.shippers", 1, TopicReplication::Variable(&[&[2, 3, 1]]))
                    .set("errors.deadletterqueue.group.enable", "true"),
            ],
            &common::admin_options(),
        ),
    )?;
    ensure!(created.iter().all(Result::is_ok), "{created:?}");
    let source = wait_full_isr(&nodes, "shipments")?;
    let dead = wait_full_isr(&nodes, "dlq.shippers")?;
    ensure!(
        source[&0].leader == 1 && dead[&0].leader == 2,
        "{source:?} {dead:?}"
    );
    share_from_the_log_start(&nodes, "shippers")?;
    let coordinator = coordinator_of(&all, 0, "shippers")?;
    let addresses: Vec<String> = nodes.iter().map(Broker::bootstrap).collect();
    let address = |id: i32| -> anyhow::Result<String> {
        let i = usize::try_from(id - 1)?;
        Ok(addresses.get(i).context("no such node")?.clone())
    };
    let mut m = Member::join_at(
        &address(coordinator)?,
        &address(1)?,
        "shippers",
        "shipments",
    )?;
    produce(&all, "shipments", 0, 3)?;
    let got = m.fetch_until(3)?;
    ensure!(got.len() == 3, "{got:?}");
    ensure!(
        m.acknowledge(&[(0, 1, REJECT), (2, 2, ACCEPT)])? == (0, 0),
        "the acknowledgement failed"
    );
    let offsets = dead_letter_offsets(&nodes, "dlq.shippers", 2)?;
    ensure!(
        offsets == ["0", "1"],
        "dead letters on broker 2: {offsets:?}"
    );
    drop(m);

    // Node 1 dies before confirming them: node 3 takes the share-partition
    // up with both records still dead-lettering, finds their dead letters
    // on node 2, and confirms them without writing them again.
    nodes[0].sigkill()?;
    ensure!(new_leader(&nodes, "shipments", 1)? == 3);
    joined_member(&nodes, "shippers", "shipments", 3)?;
    wait_until(SETTLE_TIMEOUT, "the dead letters confirmed", || {
        let coordinator = coordinator_of(&bootstrap_alive(&nodes), 0, "shippers")?;
        let mut admin = common::raw::RawClient::connect(&address(coordinator)?)?;
        let described = common::share::start_offsets(&mut admin, "shippers", Some("shipments"))?;
        Ok(described.first().map(|d| d.2) == Some(3))
    })?;
    let offsets = dead_letter_offsets(&nodes, "dlq.shippers", 2)?;
    ensure!(offsets == ["0", "1"], "after the move: {offsets:?}");
    Ok(())
}

/// The leader of partition 0 of `topic` as the live nodes describe it, once
/// it is a live node other than `not`.
fn new_leader(nodes: &[Broker], topic: &str, not: i32) -> anyhow::Result<i32> {
    let alive: Vec<i32> = (1..)
        .zip(nodes)
        .filter(|(_, n)| n.pid().is_some())
        .map(|(id, _)| id)
        .collect();
    let mut leader = -1;
    wait_until(SETTLE_TIMEOUT, "a new leader on a live node", || {
        leader = describe(&bootstrap_alive(nodes), topic)
            .ok()
            .and_then(|d| d.get(&0).map(|d| d.leader))
            .unwrap_or(-1);
        Ok(leader != not && alive.contains(&leader))
    })?;
    Ok(leader)
}

/// A new member of `group` that joined through the group's coordinator and
/// fetched once from `leader` without an error, with what that fetch
/// acquired. Until then each try starts over with a new member: after a
/// death, the coordinator named or the leader described may not have taken
/// its role up yet (the answer is then an error, and nothing was acquired).
fn joined_member(
    nodes: &[Broker],
    group: &str,
    topic: &str,
    leader: i32,
) -> anyhow::Result<(common::share::Member, Vec<common::share::Got>)> {
    let address = |id: i32| -> anyhow::Result<String> {
        let i = usize::try_from(id - 1)?;
        Ok(nodes.get(i).context("no such node")?.bootstrap())
    };
    let mut joined = None;
    let mut last_error = String::new();
    wait_until(SETTLE_TIMEOUT, "a share member joined and fetching", || {
        let coordinator = coordinator_of(&bootstrap_alive(nodes), 0, group)?;
        let tried =
            common::share::Member::join_at(&address(coordinator)?, &address(leader)?, group, topic)
                .and_then(|mut member| {
                    let got = member.fetch(&[], 500)?;
                    Ok((member, got))
                });
        match tried {
            Ok(done) => joined = Some(done),
            Err(e) => last_error = e.to_string(),
        }
        Ok(joined.is_some())
    })
    .with_context(|| format!("the last try: {last_error}"))?;
    joined.context("no member")
}

/// A share group's member on a cluster, fetching from `leader`, once it
/// holds `n` records.
fn share_member_at(
    nodes: &[Broker],
    group: &str,
    topic: &str,
    leader: i32,
    n: usize,
) -> anyhow::Result<(common::share::Member, Vec<common::share::Got>)> {
    let (mut member, mut got) = joined_member(nodes, group, topic, leader)?;
    if got.len() < n {
        got.extend(member.fetch_until(n - got.len())?);
    }
    Ok((member, got))
}

/// `got` is each offset of `offsets` once, in order, each delivered for
/// the `count`th time.
fn got_each_once(
    got: &[common::share::Got],
    offsets: std::ops::Range<i64>,
    count: i16,
    when: &str,
) -> anyhow::Result<()> {
    let seen: Vec<(i64, i16)> = got.iter().map(|g| (g.offset, g.delivery_count)).collect();
    let wanted: Vec<(i64, i16)> = offsets.map(|o| (o, count)).collect();
    ensure!(seen == wanted, "{when}: got {seen:?}, wanted {wanted:?}");
    Ok(())
}

/// `acks` (first, last, type) are taken without an error.
fn acknowledged(member: &mut common::share::Member, acks: &[(i64, i64, i8)]) -> anyhow::Result<()> {
    let errors = member.acknowledge(acks)?;
    ensure!(
        errors == (0, 0),
        "acknowledging {acks:?}: errors {errors:?}"
    );
    Ok(())
}

#[test]
fn share_group_state_survives_the_death_of_the_partitions_leader_and_of_its_share_coordinator()
-> anyhow::Result<()> {
    use common::share::{ACCEPT, RELEASE};
    let mut nodes = start_cluster(
        3,
        &[
            "--set",
            "group.share.enable=true",
            "--set",
            "share.coordinator.state.topic.num.partitions=1",
        ],
    )?;
    let all = bootstrap(&nodes);
    for group in ["warmers", "taskers"] {
        share_from_the_log_start(&nodes, group)?;
    }
    // A first share group makes `__share_group_state`; its one partition's
    // leader is every share-partition's share coordinator.
    create_replicated_blocking(&all, "warm", 1, 3)?;
    let warm = wait_full_isr(&nodes, "warm")?;
    produce(&all, "warm", 0, 1)?;
    share_member_at(&nodes, "warmers", "warm", warm[&0].leader, 1)?;
    let keeper = wait_full_isr(&nodes, "__share_group_state")?[&0].leader;
    let group_coordinator = coordinator_of(&all, 0, "taskers")?;
    // The topic's leader is another node, so the first death moves the
    // share-partition and leaves its share coordinator; and not the
    // group's coordinator, which then describes the group's start offset
    // from the share coordinator.
    let others: Vec<i32> = (1..=3).filter(|id| *id != keeper).collect();
    let (leader, third) = if others[0] == group_coordinator {
        (others[1], others[0])
    } else {
        (others[0], others[1])
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let admin = common::admin(&all)?;
    let replicas = [leader, keeper, third];
    let created = runtime.block_on(admin.create_topics(
        &[NewTopic::new(
            "tasks",
            1,
            TopicReplication::Variable(&[&replicas]),
        )],
        &common::admin_options(),
    ))?;
    ensure!(created.iter().all(Result::is_ok), "{created:?}");
    ensure!(wait_full_isr(&nodes, "tasks")?[&0].leader == leader);
    produce(&all, "tasks", 0, 20)?;
    let (mut first, got) = share_member_at(&nodes, "taskers", "tasks", leader, 20)?;
    got_each_once(&got, 0..20, 1, "at first")?;
    acknowledged(&mut first, &[(0, 4, ACCEPT)])?;
    let mut admin = common::raw::RawClient::connect(
        &nodes[usize::try_from(group_coordinator - 1)?].bootstrap(),
    )?;
    // The share coordinator answers each share-partition once, however
    // often a request names it.
    {
        use kafka_protocol::messages::ReadShareGroupStateRequest;
        use kafka_protocol::messages::read_share_group_state_request as read;
        let mut keeper_client =
            common::raw::RawClient::connect(&nodes[usize::try_from(keeper - 1)?].bootstrap())?;
        let asked = read::PartitionData::default()
            .with_partition(0)
            .with_leader_epoch(-1);
        let answer = keeper_client.call(
            &ReadShareGroupStateRequest::default()
                .with_group_id(kafka_protocol::protocol::StrBytes::from_static_str(
                    "taskers",
                ))
                .with_topics(vec![
                    read::ReadStateData::default()
                        .with_topic_id(first.topic_id()?)
                        .with_partitions(vec![asked.clone(), asked.clone(), asked]),
                ]),
            0,
        )?;
        let starts: Vec<(i16, i64)> = answer
            .results
            .iter()
            .flat_map(|t| t.partitions.iter())
            .map(|p| (p.error_code, p.start_offset))
            .collect();
        ensure!(starts == [(0, 5)], "the share coordinator read: {starts:?}");
    }
    for topics in [Some("tasks"), None] {
        let described = common::share::start_offsets(&mut admin, "taskers", topics)?;
        ensure!(
            described == [("tasks".to_string(), 0, 5, 0)],
            "broker {group_coordinator} describes {described:?} (share-partition led by \
             {leader}, state kept by {keeper})"
        );
    }

    // 1. The share-partition's leader dies holding 5..19: its successor
    // takes the state up from the share coordinator.
    nodes[usize::try_from(leader - 1)?].sigkill()?;
    let second_leader = new_leader(&nodes, "tasks", leader)?;
    let (mut second, got) = share_member_at(&nodes, "taskers", "tasks", second_leader, 15)?;
    got_each_once(&got, 5..20, 2, "after the leader's death")?;
    // A live broker that does not lead the partition refuses fetches and
    // acknowledgements, and names the leader and where it listens.
    let bystander = if second_leader == keeper {
        third
    } else {
        keeper
    };
    let coordinator = coordinator_of(&bootstrap_alive(&nodes), 0, "taskers")?;
    let at = |id: i32| nodes[usize::try_from(id - 1).unwrap_or(0)].bootstrap();
    let mut lost =
        common::share::Member::join_at(&at(coordinator), &at(bystander), "taskers", "tasks")?;
    let answer = lost.fetch_raw(&[(5, 5, ACCEPT)], 0)?;
    let p = answer
        .responses
        .iter()
        .flat_map(|t| t.partitions.iter())
        .next()
        .context("no partition answered")?;
    ensure!(
        (p.error_code, p.acknowledge_error_code) == (6, 6),
        "a non-leader's answer: {p:?}"
    );
    ensure!(p.current_leader.leader_id == second_leader, "{p:?}");
    let port = at(second_leader)
        .rsplit(':')
        .next()
        .unwrap_or("")
        .parse::<i32>()?;
    ensure!(
        answer
            .node_endpoints
            .iter()
            .any(|e| e.node_id.0 == second_leader && e.port == port),
        "the leader's endpoint: {:?}",
        answer.node_endpoints
    );
    acknowledged(&mut second, &[(5, 9, ACCEPT), (10, 19, RELEASE)])?;

    // 2. Back to three nodes, then the share coordinator dies: its state
    // is replayed from a replica by the next leader of its partition.
    nodes[usize::try_from(leader - 1)?].restart()?;
    wait_full_isr(&nodes, "tasks")?;
    wait_full_isr(&nodes, "__share_group_state")?;
    nodes[usize::try_from(keeper - 1)?].sigkill()?;
    let third_leader = if second_leader == keeper {
        new_leader(&nodes, "tasks", keeper)?
    } else {
        second_leader
    };
    new_leader(&nodes, "__share_group_state", keeper)?;
    let (mut third_member, got) = share_member_at(&nodes, "taskers", "tasks", third_leader, 10)?;
    got_each_once(&got, 10..20, 3, "after the share coordinator's death")?;
    acknowledged(&mut third_member, &[(10, 19, ACCEPT)])?;

    // 3. Every record is done: after one more leader death, nothing comes
    // back, and a new record is delivered once.
    nodes[usize::try_from(keeper - 1)?].restart()?;
    wait_full_isr(&nodes, "tasks")?;
    nodes[usize::try_from(third_leader - 1)?].sigkill()?;
    let last_leader = new_leader(&nodes, "tasks", third_leader)?;
    produce(&bootstrap_alive(&nodes), "tasks", 20, 1)?;
    let (mut last, got) = share_member_at(&nodes, "taskers", "tasks", last_leader, 1)?;
    got_each_once(&got, 20..21, 1, "after every record was done")?;
    ensure!(
        last.fetch(&[(20, 20, ACCEPT)], 500)?.is_empty(),
        "a record came back"
    );
    Ok(())
}

/// `member` leaves its share group.
fn left(member: &mut common::share::Member) -> anyhow::Result<()> {
    member.epoch = -1;
    let (error, _) = member.heartbeat(None)?;
    ensure!(error == 0, "leaving: error {error}");
    Ok(())
}

#[test]
fn share_groups_start_reset_and_delete_a_partition_another_broker_leads() -> anyhow::Result<()> {
    use common::share::{ACCEPT, alter_start, delete_offsets, start_offsets};
    use kafka_protocol::messages::{DeleteGroupsRequest, GroupId};
    const NON_EMPTY_GROUP: i16 = 68;
    let nodes = start_cluster(
        3,
        &[
            "--set",
            "group.share.enable=true",
            "--set",
            "share.coordinator.state.topic.num.partitions=3",
        ],
    )?;
    let all = bootstrap(&nodes);
    let group = "resetters";
    share_from_the_log_start(&nodes, group)?;
    // The partition's leader is not the group's coordinator, so every
    // change below reaches it from the coordinator.
    let group_coordinator = coordinator_of(&all, 0, group)?;
    let leader = (1..=3)
        .find(|id| *id != group_coordinator)
        .context("another node")?;
    let replicas: Vec<i32> = std::iter::once(leader)
        .chain((1..=3).filter(|id| *id != leader))
        .collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let created = runtime.block_on(common::admin(&all)?.create_topics(
        &[NewTopic::new(
            "jobs",
            1,
            TopicReplication::Variable(&[&replicas]),
        )],
        &common::admin_options(),
    ))?;
    ensure!(created.iter().all(Result::is_ok), "{created:?}");
    ensure!(wait_full_isr(&nodes, "jobs")?[&0].leader == leader);
    produce(&all, "jobs", 0, 10)?;
    let (mut member, got) = share_member_at(&nodes, group, "jobs", leader, 10)?;
    got_each_once(&got, 0..10, 1, "at first")?;
    acknowledged(&mut member, &[(0, 4, ACCEPT)])?;
    let mut admin = common::raw::RawClient::connect(
        &nodes[usize::try_from(group_coordinator - 1)?].bootstrap(),
    )?;
    let reset = alter_start(&mut admin, group, "jobs", 2)?;
    ensure!(reset.0 == NON_EMPTY_GROUP, "reset with a member: {reset:?}");
    left(&mut member)?;

    // 1. Reset to 2 while the member that left still holds 5..9: its
    // leader starts the share-partition afresh there.
    let reset = alter_start(&mut admin, group, "jobs", 2)?;
    ensure!(reset == (0, 0), "reset: {reset:?}");
    let described = start_offsets(&mut admin, group, Some("jobs"))?;
    ensure!(
        described == [("jobs".to_string(), 0, 2, 0)],
        "{described:?}"
    );
    let (mut member, got) = share_member_at(&nodes, group, "jobs", leader, 8)?;
    got_each_once(&got, 2..10, 1, "after the reset")?;
    acknowledged(&mut member, &[(2, 9, ACCEPT)])?;
    left(&mut member)?;

    // 2. Deleted: the group starts the partition where
    // share.auto.offset.reset says, the log start.
    let deleted = delete_offsets(&mut admin, group, "jobs")?;
    ensure!(deleted == (0, 0), "delete: {deleted:?}");
    let described = start_offsets(&mut admin, group, Some("jobs"))?;
    ensure!(
        described == [("jobs".to_string(), 0, -1, 0)],
        "{described:?}"
    );
    let (mut member, got) = share_member_at(&nodes, group, "jobs", leader, 10)?;
    got_each_once(&got, 0..10, 1, "after the delete")?;
    acknowledged(&mut member, &[(0, 9, ACCEPT)])?;
    left(&mut member)?;

    // 3. The group deleted: a new group of the same id starts afresh,
    // though every record was accepted by the old one.
    let answer = admin.call(
        &DeleteGroupsRequest::default().with_groups_names(vec![GroupId(
            kafka_protocol::protocol::StrBytes::from_static_str(group),
        )]),
        2,
    )?;
    let codes: Vec<i16> = answer.results.iter().map(|r| r.error_code).collect();
    ensure!(codes == [0], "DeleteGroups: {codes:?}");
    let (_, got) = share_member_at(&nodes, group, "jobs", leader, 10)?;
    got_each_once(&got, 0..10, 1, "in a new group of the same id")?;

    // 4. A group reading from the latest offset (the default) starts the
    // partition when its coordinator assigns it, though another broker
    // leads it: what is produced before the member's first fetch is
    // delivered.
    let coordinator = coordinator_of(&all, 0, "latecomers")?;
    let at = |id: i32| nodes[usize::try_from(id - 1).unwrap_or(0)].bootstrap();
    let mut late =
        common::share::Member::join_at(&at(coordinator), &at(leader), "latecomers", "jobs")?;
    // The assignment comes in the answer to a heartbeat once, when it
    // changes: the member has it when it knows the topic's id.
    wait_until(SETTLE_TIMEOUT, "the partition assigned", || {
        if late.topic_id.is_none() {
            late.heartbeat(None)?;
        }
        Ok(late.topic_id.is_some())
    })?;
    produce(&all, "jobs", 10, 5)?;
    let got = late.fetch_until(5)?;
    got_each_once(&got, 10..15, 1, "produced after the assignment")?;
    Ok(())
}

/// One new member of group `soakers` fetching `fetches` times from the
/// leader of `soak`, accepting what `accept` picks (each in the next
/// fetch) and adding to `accepted` what was accepted without an error;
/// fails if an offset in `accepted` is delivered again.
fn share_rounds(
    nodes: &[Broker],
    accepted: &mut std::collections::BTreeSet<i64>,
    fetches: usize,
    accept: &mut dyn FnMut() -> bool,
    why: &str,
) -> anyhow::Result<()> {
    let leader = new_leader(nodes, "soak", -1)?;
    let (mut member, first) = joined_member(nodes, "soakers", "soak", leader)?;
    let mut delivered: Vec<(i64, i16)> =
        first.iter().map(|g| (g.offset, g.delivery_count)).collect();
    let mut pending = Vec::<(i64, i64, i8)>::new();
    for fetch in 0..fetches {
        for (offset, delivery) in delivered.drain(..) {
            ensure!(
                !accepted.contains(&offset),
                "{why}: offset {offset} was accepted, then delivered again (delivery {delivery})"
            );
            if accept() {
                pending.push((offset, offset, common::share::ACCEPT));
            }
        }
        if fetch + 1 == fetches {
            break;
        }
        let r = member.fetch_raw(&pending, 300)?;
        ensure!(
            r.error_code == 0,
            "{why}: share fetch error {}",
            r.error_code
        );
        for p in r.responses.iter().flat_map(|t| t.partitions.iter()) {
            ensure!(
                p.error_code == 0 && p.acknowledge_error_code == 0,
                "{why}: partition errors {} / {}",
                p.error_code,
                p.acknowledge_error_code
            );
            accepted.extend(pending.drain(..).map(|(o, _, _)| o));
            for a in &p.acquired_records {
                delivered.extend((a.first_offset..=a.last_offset).map(|o| (o, a.delivery_count)));
            }
        }
    }
    Ok(())
}

#[test]
fn accepted_share_records_never_come_back_across_random_sigkills() -> anyhow::Result<()> {
    use rand::{Rng, SeedableRng};
    const ROUNDS: usize = 4;
    const PER_ROUND: u64 = 40;
    let seed = common::faults::fault_seed()?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut nodes = start_cluster(
        3,
        &[
            "--set",
            "group.share.enable=true",
            "--set",
            "share.coordinator.state.topic.num.partitions=3",
            "--set",
            "group.share.record.lock.duration.ms=2000",
        ],
    )?;
    let all = bootstrap(&nodes);
    share_from_the_log_start(&nodes, "soakers")?;
    create_replicated_blocking(&all, "soak", 1, 3)?;
    wait_full_isr(&nodes, "soak")?;
    // Offsets whose acceptance was answered without an error: none may be
    // delivered again, whatever dies.
    let mut accepted: std::collections::BTreeSet<i64> = std::collections::BTreeSet::new();
    let mut produced = 0;
    let mut dead: Option<usize> = None;
    let mut kills = Vec::new();
    for _ in 0..ROUNDS {
        produce(&bootstrap_alive(&nodes), "soak", produced, PER_ROUND)?;
        produced += PER_ROUND;
        let why = format!("seed {seed}, kills {kills:?}");
        share_rounds(&nodes, &mut accepted, 4, &mut || rng.random_bool(0.5), &why)?;
        if let Some(d) = dead.take() {
            nodes[d].restart()?;
            wait_full_isr(&nodes, "soak")?;
            wait_full_isr(&nodes, "__share_group_state")?;
        }
        // The partition's leader, a share coordinator, or neither.
        let victim = rng.random_range(0..nodes.len());
        kills.push(victim + 1);
        nodes[victim].sigkill()?;
        dead = Some(victim);
    }
    if let Some(d) = dead.take() {
        nodes[d].restart()?;
    }
    // Everything left is delivered and accepted; nothing accepted returns.
    let all_offsets = i64::try_from(produced)?;
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    while accepted.len() < usize::try_from(all_offsets)? {
        ensure!(
            Instant::now() < deadline,
            "seed {seed}: only {} of {all_offsets} records accepted; kills {kills:?}",
            accepted.len()
        );
        let why = format!("seed {seed}, kills {kills:?}");
        share_rounds(&nodes, &mut accepted, 6, &mut || true, &why)?;
    }
    ensure!(
        accepted.iter().copied().eq(0..all_offsets),
        "seed {seed}: accepted {accepted:?}"
    );
    Ok(())
}
