//! `weir bench txn`: transactional produce throughput at several
//! transaction sizes against plain (idempotent) produce in the same run,
//! the latency of each commit, and read_committed consume throughput
//! against read_uncommitted over a topic where some transactions aborted.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Args;
use hdrhistogram::Histogram;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer as _, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;

use super::CommonArgs;
use super::client::{self, Missing};
use super::report::{LatencyMs, latency_histogram};

pub(super) const TXN_EXAMPLES: &str = "\
Examples:
  weir bench txn --count 100000
  weir bench txn --count 200000 --records-per-txn 10,100,1000 --abort-percent 10 --json

First --count records are produced without transactions (an idempotent
producer, acks=all) as the baseline, then --count records in transactions of
each --records-per-txn size. Each transaction's records are flushed
(acknowledged) before commit_transaction, which is timed: the commit
latency is EndTxn's (the decision, every marker and the Complete state).
Then a second topic (<topic>-committed) gets --count records in
transactions of 100, --abort-percent of them aborted, and is read from the
beginning twice: read_uncommitted (every record) and read_committed (only
the committed ones). Topics are created with --partitions when missing.

Exit status: 0 on success; 1 if a send, a commit or a read failed; 3 if no
broker answered within 10 s.";

/// How long one transactional call (init, commit, abort) may take.
const TXN_CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// The transaction size of the read_committed topic.
const CONSUME_TXN_RECORDS: u64 = 100;

/// `weir bench txn`.
#[derive(Debug, Clone, Args)]
pub struct TxnArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Records per transaction, comma-separated: one run for each.
    #[arg(long, value_delimiter = ',', default_values_t = [10u64, 100, 1000],
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    records_per_txn: Vec<u64>,
    /// Percent of the read_committed topic's transactions that abort.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(0..=100))]
    abort_percent: u64,
    /// Value bytes of each record.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(0..=1_000_000))]
    size: u64,
}

type Producer = ThreadedProducer<DefaultProducerContext>;

/// One produce run.
#[derive(Debug, Clone, Serialize)]
struct ProduceRun {
    /// `None` for the baseline without transactions.
    records_per_txn: Option<u64>,
    records: u64,
    elapsed_s: f64,
    records_per_sec: f64,
    /// This run's records/s over the baseline's.
    ratio_to_plain: f64,
    /// Around each commit_transaction; `None` for the baseline.
    commit_latency_ms: Option<LatencyMs>,
}

/// One read of the whole read_committed topic.
#[derive(Debug, Clone, Serialize)]
struct ConsumeRun {
    isolation: &'static str,
    records: u64,
    elapsed_s: f64,
    records_per_sec: f64,
}

/// The outcome. Its JSON field names are a stable interface.
#[derive(Debug, Clone, Serialize)]
struct TxnReport {
    mode: &'static str,
    brokers: String,
    topic: String,
    partitions: i32,
    size: u64,
    produce: Vec<ProduceRun>,
    abort_percent: u64,
    consume: Vec<ConsumeRun>,
    /// read_committed records/s over read_uncommitted's.
    read_committed_ratio: f64,
    properties: BTreeMap<String, String>,
}

impl TxnReport {
    fn text(&self) -> String {
        let mut text = format!(
            "weir bench txn: topic {} ({} partitions, {} B values) at {}\n",
            self.topic, self.partitions, self.size, self.brokers
        );
        for run in &self.produce {
            let what = run
                .records_per_txn
                .map_or("no transactions".to_owned(), |n| format!("{n} records/txn"));
            text.push_str(&format!(
                "  produce {what:<18} {:>10.0} records/s ({:.2}x plain)",
                run.records_per_sec, run.ratio_to_plain
            ));
            if let Some(l) = &run.commit_latency_ms {
                text.push_str(&format!(
                    ", commit p50 {:.3} ms, p99 {:.3} ms",
                    l.p50, l.p99
                ));
            }
            text.push('\n');
        }
        for run in &self.consume {
            text.push_str(&format!(
                "  consume {:<18} {:>10.0} records/s ({} records)\n",
                run.isolation, run.records_per_sec, run.records
            ));
        }
        text.push_str(&format!(
            "  read_committed / read_uncommitted: {:.2} ({}% of transactions aborted)\n",
            self.read_committed_ratio, self.abort_percent
        ));
        text
    }
}

fn producer(common: &CommonArgs, transactional_id: Option<&str>) -> anyhow::Result<Producer> {
    let mut mode = vec![
        ("acks", "all".to_owned()),
        ("enable.idempotence", "true".to_owned()),
        ("linger.ms", "5".to_owned()),
    ];
    if let Some(id) = transactional_id {
        mode.push(("transactional.id", id.to_owned()));
    }
    let producer: Producer = client::config(common, &mode)
        .create()
        .context("cannot create a producer")?;
    if transactional_id.is_some() {
        producer
            .init_transactions(TXN_CALL_TIMEOUT)
            .context("init_transactions")?;
    }
    Ok(producer)
}

/// Send one record, waiting while librdkafka's queue is full.
fn send(producer: &Producer, topic: &str, partition: i32, value: &[u8]) -> anyhow::Result<()> {
    let mut record: BaseRecord<'_, [u8], [u8]> =
        BaseRecord::to(topic).partition(partition).payload(value);
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((
                rdkafka::error::KafkaError::MessageProduction(
                    rdkafka::types::RDKafkaErrorCode::QueueFull,
                ),
                back,
            )) => {
                record = back;
                std::thread::sleep(Duration::from_millis(1));
            }
            Err((err, _)) => return Err(err).context("send"),
        }
    }
}

/// Produce `count` records to `topic`, in transactions of `per_txn`
/// (none when `None`), aborting `abort_percent` of the transactions.
/// Returns the elapsed time and the commit latencies. `weir bench share`
/// fills its topics with it too.
pub(super) fn produce(
    common: &CommonArgs,
    topic: &str,
    (partitions, size): (i32, u64),
    per_txn: Option<u64>,
    abort_percent: u64,
) -> anyhow::Result<(Duration, Histogram<u64>)> {
    let id = per_txn.map(|n| format!("weir-bench-{}-{n}-{}", topic, std::process::id()));
    let producer = producer(common, id.as_deref())?;
    let value = vec![b'x'; usize::try_from(size).unwrap_or(0)];
    let mut histogram = latency_histogram()?;
    let started = Instant::now();
    let mut sent = 0u64;
    let mut txn = 0u64;
    while sent < common.count {
        let records = per_txn.unwrap_or(common.count).min(common.count - sent);
        if per_txn.is_some() {
            producer.begin_transaction().context("begin_transaction")?;
        }
        for i in 0..records {
            let partition =
                i32::try_from((sent + i) % u64::try_from(partitions.max(1)).unwrap_or(1))
                    .unwrap_or(0);
            send(&producer, topic, partition, &value)?;
        }
        sent += records;
        txn += 1;
        if per_txn.is_some() {
            // abort_percent of the transactions abort, spread evenly: the
            // txn-th aborts when it brings the aborted count to the next
            // whole number of abort_percent/100 per transaction.
            let aborts = txn * abort_percent / 100 > (txn - 1) * abort_percent / 100;
            // The records are acknowledged first, so the commit's time is
            // EndTxn's alone: the decision, the markers and the Complete state.
            producer.flush(TXN_CALL_TIMEOUT).context("flush")?;
            let at = Instant::now();
            if aborts {
                producer
                    .abort_transaction(TXN_CALL_TIMEOUT)
                    .context("abort_transaction")?;
            } else {
                producer
                    .commit_transaction(TXN_CALL_TIMEOUT)
                    .context("commit_transaction")?;
                let us = u64::try_from(at.elapsed().as_micros()).unwrap_or(u64::MAX);
                histogram.saturating_record(us.max(1));
            }
        }
    }
    producer.flush(TXN_CALL_TIMEOUT).context("flush")?;
    Ok((started.elapsed(), histogram))
}

/// Read `topic` from the beginning up to its end under `isolation`.
fn consume(
    common: &CommonArgs,
    topic: &str,
    partitions: i32,
    isolation: &'static str,
) -> anyhow::Result<ConsumeRun> {
    let consumer: BaseConsumer = client::config(
        common,
        &[
            ("group.id", format!("weir-bench-txn-{}", std::process::id())),
            ("enable.auto.commit", "false".to_owned()),
            ("isolation.level", isolation.to_owned()),
        ],
    )
    .create()
    .context("cannot create a consumer")?;
    let mut assignment = TopicPartitionList::new();
    let mut ends = Vec::new();
    for p in 0..partitions {
        let (_, end) = consumer
            .fetch_watermarks(topic, p, TXN_CALL_TIMEOUT)
            .with_context(|| format!("cannot list the offsets of {topic}-{p}"))?;
        ends.push(end);
        assignment.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    consumer.assign(&assignment)?;
    let started = Instant::now();
    let deadline = started + TXN_CALL_TIMEOUT * 10;
    let mut records = 0u64;
    loop {
        if let Some(message) = consumer.poll(Duration::from_millis(100)) {
            message.context("consume")?;
            records += 1;
        }
        let position = consumer.position()?;
        let done = position.elements().iter().all(|e| match e.offset() {
            Offset::Offset(at) => {
                at >= ends
                    .get(usize::try_from(e.partition()).unwrap_or(0))
                    .copied()
                    .unwrap_or(0)
            }
            _ => false,
        });
        if done {
            break;
        }
        if Instant::now() > deadline {
            bail!("reading {topic} ({isolation}) did not reach its end");
        }
    }
    let elapsed_s = started.elapsed().as_secs_f64();
    Ok(ConsumeRun {
        isolation,
        records,
        elapsed_s,
        records_per_sec: if elapsed_s > 0.0 {
            records as f64 / elapsed_s
        } else {
            0.0
        },
    })
}

/// Runs `weir bench txn` and prints its report.
pub(super) fn run(args: &TxnArgs) -> anyhow::Result<()> {
    let common = &args.common;
    let topic = client::prepare_topic(common, Missing::Create)?;
    let partitions = topic.partitions;
    let rate = |d: Duration| {
        let s = d.as_secs_f64();
        if s > 0.0 {
            common.count as f64 / s
        } else {
            0.0
        }
    };
    let (plain, _) = produce(common, &common.topic, (partitions, args.size), None, 0)?;
    let plain_rate = rate(plain);
    let mut runs = vec![ProduceRun {
        records_per_txn: None,
        records: common.count,
        elapsed_s: plain.as_secs_f64(),
        records_per_sec: plain_rate,
        ratio_to_plain: 1.0,
        commit_latency_ms: None,
    }];
    for &n in &args.records_per_txn {
        if !common.json {
            eprintln!("producing {} records in transactions of {n}", common.count);
        }
        let (elapsed, histogram) =
            produce(common, &common.topic, (partitions, args.size), Some(n), 0)?;
        runs.push(ProduceRun {
            records_per_txn: Some(n),
            records: common.count,
            elapsed_s: elapsed.as_secs_f64(),
            records_per_sec: rate(elapsed),
            ratio_to_plain: if plain_rate > 0.0 {
                rate(elapsed) / plain_rate
            } else {
                0.0
            },
            commit_latency_ms: LatencyMs::from_histogram(&histogram),
        });
    }
    let committed_topic = format!("{}-committed", common.topic);
    let committed_common = CommonArgs {
        topic: committed_topic.clone(),
        ..common.clone()
    };
    let info = client::prepare_topic(&committed_common, Missing::Create)?;
    produce(
        &committed_common,
        &committed_topic,
        (info.partitions, args.size),
        Some(CONSUME_TXN_RECORDS),
        args.abort_percent,
    )?;
    let uncommitted = consume(
        common,
        &committed_topic,
        info.partitions,
        "read_uncommitted",
    )?;
    let committed = consume(common, &committed_topic, info.partitions, "read_committed")?;
    let ratio = if uncommitted.records_per_sec > 0.0 {
        committed.records_per_sec / uncommitted.records_per_sec
    } else {
        0.0
    };
    let report = TxnReport {
        mode: "txn",
        brokers: common.brokers.clone(),
        topic: common.topic.clone(),
        partitions,
        size: args.size,
        produce: runs,
        abort_percent: args.abort_percent,
        consume: vec![uncommitted, committed],
        read_committed_ratio: ratio,
        properties: common.property.iter().cloned().collect(),
    };
    super::group::print_report(common.json, &report, &report.text())
}
