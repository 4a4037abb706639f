//! `weir bench share`: share group (KIP-932) consume throughput with 1, 4
//! and 16 members against as many librdkafka consumers each reading its own
//! partition (the split a settled consumer group has), and the latency
//! from a member's reject to its dead letter (KIP-1191) reaching a reader
//! of the dead-letter topic.
//!
//! Share members are `weir_client::share::ShareMember` (the bundled
//! librdkafka has no share consumer), one thread each, accepting every
//! record. Throughput is counted from the first record any member receives
//! to the last, so joining (and, for the baseline, connecting) is left out
//! of both.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Args;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::message::{Headers as _, Message as _};
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;
use weir_client::share::{AckType, ShareMember};

use super::CommonArgs;
use super::client::{self};
use super::report::{LatencyMs, latency_histogram};

pub(super) const SHARE_EXAMPLES: &str = "\
Examples:
  weir bench share --count 200000
  weir bench share --count 200000 --members 1,4,16 --dead-letters 10000 --json

For each --members N: --count records are produced to a fresh topic of one
partition (--partitions to change it) and read by a share group of N members,
each accepting every record; then --count records are produced to a fresh
topic of N partitions and read by N librdkafka consumers, each assigned one
partition (a settled consumer group's split, without its rebalance). Rates
are counted from the first record received to the last. Then one member
rejects --dead-letters records and a reader of the group's dead-letter topic
times each from the reject (sent with the member's next fetch) to its dead
letter. The broker needs group.share.enable=true.

Exit status: 0 on success; 1 if a read stalled or failed; 3 if no broker
answered within 10 s.";

/// The longest a phase may go without progress.
const STALL: Duration = Duration::from_secs(60);
/// Records one ShareFetch acquires at most, and how long it waits.
const FETCH: (i32, i32) = (500, 500);
/// The most members one run may have.
const MEMBERS_MAX: u32 = 64;

/// `weir bench share`.
#[derive(Debug, Clone, Args)]
pub struct ShareArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Members (and baseline consumers) per run, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [1u32, 4, 16],
          value_parser = clap::value_parser!(u32).range(1..=i64::from(MEMBERS_MAX)))]
    members: Vec<u32>,
    /// Value bytes of each record.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(0..=1_000_000))]
    size: u64,
    /// Records rejected for the dead-letter latency (0 skips it).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(0..=10_000_000))]
    dead_letters: u64,
}

/// One run of N readers.
#[derive(Debug, Clone, Serialize)]
struct Run {
    members: u32,
    share_records_per_sec: f64,
    /// The fewest and most records one member took.
    share_member_records: (u64, u64),
    classic_records_per_sec: f64,
    /// Share over the baseline.
    ratio: f64,
}

/// The dead-letter phase.
#[derive(Debug, Clone, Serialize)]
struct DeadLetters {
    records: u64,
    /// From the first dead letter read to the last.
    per_sec: f64,
    /// From the fetch carrying the reject to the dead letter read.
    latency_ms: Option<LatencyMs>,
}

/// The outcome. Its JSON field names are a stable interface.
#[derive(Debug, Clone, Serialize)]
struct ShareReport {
    mode: &'static str,
    brokers: String,
    topic: String,
    count: u64,
    size: u64,
    share_partitions: i32,
    runs: Vec<Run>,
    dead_letters: Option<DeadLetters>,
}

impl ShareReport {
    fn text(&self) -> String {
        let mut text = format!(
            "weir bench share: {} records of {} B at {} (share topic: {} partition(s))\n",
            self.count, self.size, self.brokers, self.share_partitions
        );
        for r in &self.runs {
            text.push_str(&format!(
                "  {:>2} readers: share group {:>9.0} records/s (per member {}..{}), \
                 partitioned consumers {:>9.0} records/s, ratio {:.2}\n",
                r.members,
                r.share_records_per_sec,
                r.share_member_records.0,
                r.share_member_records.1,
                r.classic_records_per_sec,
                r.ratio
            ));
        }
        if let Some(d) = &self.dead_letters {
            text.push_str(&format!(
                "  dead letters: {} at {:.0}/s",
                d.records, d.per_sec
            ));
            if let Some(l) = &d.latency_ms {
                text.push_str(&format!(
                    ", reject to dead letter p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
                    l.p50, l.p99, l.max
                ));
            }
            text.push('\n');
        }
        text
    }
}

/// What a run's readers took, and when the first and the last record came.
#[derive(Debug, Default)]
struct Tally {
    taken: AtomicU64,
    first: Mutex<Option<Instant>>,
    last: Mutex<Option<Instant>>,
}

impl Tally {
    /// Whether `count` records are taken.
    fn done(&self, count: u64) -> bool {
        self.taken.load(Ordering::SeqCst) >= count
    }

    /// `n` more records, received at `now`, of a run of `count`.
    fn took(&self, n: u64, now: Instant, count: u64) {
        self.first
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_or_insert(now);
        if self.taken.fetch_add(n, Ordering::SeqCst) + n >= count {
            *self.last.lock().unwrap_or_else(PoisonError::into_inner) = Some(now);
        }
    }

    /// `count` records over the time from the first to the last.
    fn rate(&self, count: u64) -> anyhow::Result<f64> {
        let first = *self.first.lock().unwrap_or_else(PoisonError::into_inner);
        let last = *self.last.lock().unwrap_or_else(PoisonError::into_inner);
        let elapsed = first
            .zip(last)
            .map(|(f, l)| l.duration_since(f))
            .context("no record was read")?;
        Ok(rate(count, elapsed))
    }
}

fn rate(records: u64, elapsed: Duration) -> f64 {
    let s = elapsed.as_secs_f64();
    if s > 0.0 { records as f64 / s } else { 0.0 }
}

/// Set group configs (IncrementalAlterConfigs on the GROUP resource).
fn set_group_configs(
    common: &CommonArgs,
    group: &str,
    configs: &[(&str, &str)],
) -> anyhow::Result<()> {
    use kafka_protocol::messages::IncrementalAlterConfigsRequest;
    use kafka_protocol::messages::incremental_alter_configs_request::{
        AlterConfigsResource, AlterableConfig,
    };
    let mut client = connect(common)?;
    let request = IncrementalAlterConfigsRequest::default().with_resources(vec![
        AlterConfigsResource::default()
            .with_resource_type(32)
            .with_resource_name(weir_client::str_bytes(group))
            .with_configs(
                configs
                    .iter()
                    .map(|(k, v)| {
                        AlterableConfig::default()
                            .with_name(weir_client::str_bytes(k))
                            .with_config_operation(0)
                            .with_value(Some(weir_client::str_bytes(v)))
                    })
                    .collect(),
            ),
    ]);
    let response = client.send(&request, 1)?;
    for r in response.responses {
        weir_client::check_message(r.error_code, r.error_message.as_ref(), || {
            format!("setting the configs of group {group}")
        })?;
    }
    Ok(())
}

fn connect(common: &CommonArgs) -> anyhow::Result<weir_client::Client> {
    let config = super::scale::client_config(Duration::from_secs(30));
    Ok(super::scale::connect_retrying(
        &common.brokers,
        &config,
        Duration::from_secs(10),
    )?)
}

/// A fresh name for this process's `what`.
fn fresh(common: &CommonArgs, what: &str) -> String {
    format!("{}-{what}-{}", common.topic, std::process::id())
}

/// Read `count` records of `topic` with a share group of `members`, each
/// accepting what it gets: the rate and the fewest and most one member took.
fn share_run(
    common: &CommonArgs,
    topic: &str,
    group: &str,
    members: u32,
) -> anyhow::Result<(f64, (u64, u64))> {
    set_group_configs(common, group, &[("share.auto.offset.reset", "earliest")])?;
    let tally = Arc::new(Tally::default());
    let count = common.count;
    let threads: Vec<_> = (0..members)
        .map(|i| {
            let (common, topic, group) = (common.clone(), topic.to_owned(), group.to_owned());
            let tally = tally.clone();
            std::thread::spawn(move || -> anyhow::Result<u64> {
                let mut client = connect(&common)?;
                let mut member =
                    ShareMember::join(&mut client, &group, &topic, &format!("bench-{i}"), FETCH)?;
                let mut mine = 0u64;
                let mut progress = Instant::now();
                while !tally.done(count) {
                    let got = member.poll(&mut client)?;
                    if got.is_empty() {
                        if progress.elapsed() > STALL {
                            bail!("share member {i} got nothing for {} s", STALL.as_secs());
                        }
                        if member.assigned().is_empty() {
                            // Not assigned yet: ask again shortly.
                            std::thread::sleep(Duration::from_millis(20));
                        }
                        continue;
                    }
                    let now = Instant::now();
                    progress = now;
                    for d in &got {
                        member.acknowledge(d.partition, d.record.offset, AckType::Accept);
                    }
                    let n = got.len() as u64;
                    mine += n;
                    tally.took(n, now, count);
                }
                member.close(&mut client)?;
                Ok(mine)
            })
        })
        .collect();
    let mut per_member = Vec::new();
    for t in threads {
        per_member.push(
            t.join()
                .map_err(|_| anyhow::anyhow!("a share member panicked"))??,
        );
    }
    let spread = (
        per_member.iter().copied().min().unwrap_or(0),
        per_member.iter().copied().max().unwrap_or(0),
    );
    Ok((tally.rate(count)?, spread))
}

/// Read `count` records of `topic` (`partitions` of them) with one
/// librdkafka consumer per partition.
fn classic_run(common: &CommonArgs, topic: &str, partitions: i32) -> anyhow::Result<f64> {
    let tally = Arc::new(Tally::default());
    let count = common.count;
    let threads: Vec<_> = (0..partitions)
        .map(|p| {
            let (common, topic) = (common.clone(), topic.to_owned());
            let tally = tally.clone();
            std::thread::spawn(move || -> anyhow::Result<()> {
                let consumer: BaseConsumer = client::config(
                    &common,
                    &[
                        (
                            "group.id",
                            format!("weir-bench-share-{}", std::process::id()),
                        ),
                        ("enable.auto.commit", "false".to_owned()),
                    ],
                )
                .create()
                .context("cannot create a consumer")?;
                let mut tpl = TopicPartitionList::new();
                tpl.add_partition_offset(&topic, p, Offset::Beginning)?;
                consumer.assign(&tpl)?;
                let mut progress = Instant::now();
                while !tally.done(count) {
                    let Some(m) = consumer.poll(Duration::from_millis(100)) else {
                        if progress.elapsed() > STALL {
                            bail!(
                                "consumer of {topic}-{p} got nothing for {} s",
                                STALL.as_secs()
                            );
                        }
                        continue;
                    };
                    m.context("consume")?;
                    let now = Instant::now();
                    progress = now;
                    tally.took(1, now, count);
                }
                Ok(())
            })
        })
        .collect();
    for t in threads {
        t.join()
            .map_err(|_| anyhow::anyhow!("a consumer panicked"))??;
    }
    tally.rate(count)
}

/// One member rejects `records` records; a reader of the dead-letter topic
/// times each from the fetch carrying its reject to its dead letter.
fn dead_letter_run(common: &CommonArgs, records: u64) -> anyhow::Result<DeadLetters> {
    let topic = fresh(common, "rejects");
    let group = fresh(common, "rejecters");
    client::prepare_topic_with(common, &topic, 1, &[])?;
    let limited = CommonArgs {
        count: records,
        ..common.clone()
    };
    super::txn::produce(&limited, &topic, (1, 100), None, 0)?;
    set_group_configs(common, &group, &[("share.auto.offset.reset", "earliest")])?;
    // The dead-letter topic, made now so its reader can start first, with
    // one record that is not a dead letter: once the reader has read it, it
    // is fetching, and what it times is the dead letters, not its start.
    let dlq = format!("dlq.{group}");
    client::prepare_topic_with(
        common,
        &dlq,
        1,
        &[("errors.deadletterqueue.group.enable", "true")],
    )?;
    let warm_up = CommonArgs {
        count: 1,
        ..common.clone()
    };
    super::txn::produce(&warm_up, &dlq, (1, 1), None, 0)?;
    let ready = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sent: Arc<Mutex<HashMap<i64, Instant>>> = Arc::default();
    let reader = {
        let (common, dlq, sent, ready) = (common.clone(), dlq.clone(), sent.clone(), ready.clone());
        std::thread::spawn(move || -> anyhow::Result<(Vec<u64>, Duration)> {
            let consumer: BaseConsumer = client::config(
                &common,
                &[
                    ("group.id", format!("weir-bench-dlq-{}", std::process::id())),
                    ("enable.auto.commit", "false".to_owned()),
                    ("fetch.wait.max.ms", "10".to_owned()),
                ],
            )
            .create()
            .context("cannot create the dead-letter reader")?;
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(&dlq, 0, Offset::Beginning)?;
            consumer.assign(&tpl)?;
            let mut latencies_us = Vec::new();
            let mut progress = Instant::now();
            let mut first: Option<Instant> = None;
            while (latencies_us.len() as u64) < records {
                let Some(m) = consumer.poll(Duration::from_millis(100)) else {
                    if progress.elapsed() > STALL {
                        bail!("no dead letter arrived for {} s", STALL.as_secs());
                    }
                    continue;
                };
                let m = m.context("reading the dead-letter topic")?;
                let now = Instant::now();
                progress = now;
                let offset = m
                    .headers()
                    .and_then(|h| {
                        h.iter()
                            .find(|h| h.key == "__dlq.errors.offset")
                            .and_then(|h| h.value)
                    })
                    .and_then(|v| std::str::from_utf8(v).ok())
                    .and_then(|v| v.parse::<i64>().ok());
                let Some(offset) = offset else {
                    // The warm-up record.
                    ready.store(true, Ordering::SeqCst);
                    continue;
                };
                let at = sent
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .get(&offset)
                    .copied();
                first.get_or_insert(now);
                if let Some(at) = at {
                    latencies_us.push(
                        u64::try_from(now.duration_since(at).as_micros()).unwrap_or(u64::MAX),
                    );
                }
            }
            Ok((latencies_us, first.map(|f| f.elapsed()).unwrap_or_default()))
        })
    };
    let waiting = Instant::now();
    while !ready.load(Ordering::SeqCst) {
        if reader.is_finished() {
            reader
                .join()
                .map_err(|_| anyhow::anyhow!("the dead-letter reader panicked"))??;
            bail!("the dead-letter reader stopped before it started reading");
        }
        if waiting.elapsed() > STALL {
            bail!("the dead-letter reader did not start reading");
        }
        // Polling a flag the reader thread raises; no result is awaited.
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut client = connect(common)?;
    let mut member = ShareMember::join(&mut client, &group, &topic, "bench-rejecter", FETCH)?;
    let mut rejected = 0u64;
    let mut owed: Vec<i64> = Vec::new();
    let mut progress = Instant::now();
    while rejected < records || !owed.is_empty() {
        // The rejects queued last time go out with this fetch.
        {
            let now = Instant::now();
            let mut sent = sent.lock().unwrap_or_else(PoisonError::into_inner);
            for offset in owed.drain(..) {
                sent.insert(offset, now);
            }
        }
        let got = member.poll(&mut client)?;
        if got.is_empty() {
            if progress.elapsed() > STALL {
                bail!("the rejecting member got nothing for {} s", STALL.as_secs());
            }
            continue;
        }
        progress = Instant::now();
        for d in &got {
            member.acknowledge(d.partition, d.record.offset, AckType::Reject);
            owed.push(d.record.offset);
        }
        rejected += got.len() as u64;
        if rejected >= records {
            // Send the last rejects now.
            let now = Instant::now();
            let mut sent = sent.lock().unwrap_or_else(PoisonError::into_inner);
            for offset in owed.drain(..) {
                sent.insert(offset, now);
            }
            drop(sent);
            member.close(&mut client)?;
            break;
        }
    }
    let (latencies_us, elapsed) = reader
        .join()
        .map_err(|_| anyhow::anyhow!("the dead-letter reader panicked"))??;
    let mut histogram = latency_histogram()?;
    for us in &latencies_us {
        histogram.saturating_record((*us).max(1));
    }
    Ok(DeadLetters {
        records,
        per_sec: rate(records, elapsed),
        latency_ms: LatencyMs::from_histogram(&histogram),
    })
}

/// Runs `weir bench share` and prints its report.
pub(super) fn run(args: &ShareArgs) -> anyhow::Result<()> {
    let common = &args.common;
    let mut runs = Vec::new();
    for &n in &args.members {
        let share_topic = fresh(common, &format!("share{n}"));
        client::prepare_topic_with(common, &share_topic, common.partitions, &[])?;
        super::txn::produce(
            common,
            &share_topic,
            (common.partitions, args.size),
            None,
            0,
        )?;
        if !common.json {
            eprintln!("reading {} records with a share group of {n}", common.count);
        }
        let group = fresh(common, &format!("group{n}"));
        let (share_rate, spread) = share_run(common, &share_topic, &group, n)?;
        let classic_topic = fresh(common, &format!("classic{n}"));
        let partitions = i32::try_from(n).unwrap_or(1);
        client::prepare_topic_with(common, &classic_topic, partitions, &[])?;
        super::txn::produce(common, &classic_topic, (partitions, args.size), None, 0)?;
        if !common.json {
            eprintln!(
                "reading {} records with {n} partitioned consumers",
                common.count
            );
        }
        let classic_rate = classic_run(common, &classic_topic, partitions)?;
        runs.push(Run {
            members: n,
            share_records_per_sec: share_rate,
            share_member_records: spread,
            classic_records_per_sec: classic_rate,
            ratio: if classic_rate > 0.0 {
                share_rate / classic_rate
            } else {
                0.0
            },
        });
    }
    let dead_letters = if args.dead_letters > 0 {
        if !common.json {
            eprintln!(
                "rejecting {} records to the dead-letter topic",
                args.dead_letters
            );
        }
        Some(dead_letter_run(common, args.dead_letters)?)
    } else {
        None
    };
    let report = ShareReport {
        mode: "share",
        brokers: common.brokers.clone(),
        topic: common.topic.clone(),
        count: common.count,
        size: args.size,
        share_partitions: common.partitions,
        runs,
        dead_letters,
    };
    super::group::print_report(common.json, &report, &report.text())
}
