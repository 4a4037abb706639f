//! Exactly-once consume-transform-produce with real processes: a `weir
//! serve`, and the reference application of `examples/exactly_once.rs` (a
//! read_committed consumer in a group and a transactional producer, both
//! librdkafka) run again and again with the same transactional id and group.
//! Some of its transactions are aborted, and some runs die by abort between
//! their sends and their commit; the next run's `init_transactions` fences
//! the dead producer and aborts its open transaction.
//!
//! Across more than 50 transactions, the output read_committed holds each
//! input's transformed record exactly once; the log holds the aborted and
//! crashed transactions' records too; and the group's committed offsets move
//! only with commits, ending at the end of the input.

mod common;

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::process::ExitStatusExt as _;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use common::Broker;
use common::cli::weir_ok;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Message, Offset, TopicPartitionList};

const TIMEOUT: Duration = Duration::from_secs(30);
/// How long one run of the application may take. The last run transforms
/// most of the input, about 55 transactions (8 s on an idle machine), on a
/// machine that may be busy compiling.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);
const INPUT: &str = "in";
const OUTPUT: &str = "out";
const PARTITIONS: i32 = 3;
const GROUP: &str = "transform";
const TRANSACTIONAL_ID: &str = "transform-1";
/// Input records, each with a unique key and value.
const RECORDS: usize = 500;
/// The most input records one transaction takes: at least RECORDS / BATCH
/// transactions commit.
const BATCH: &str = "10";
const ABORT_EVERY: u32 = 4;
/// The runs that die, each in this transaction of its own; a last run then
/// transforms the rest.
const CRASH_AT: [u32; 3] = [3, 6, 5];

/// The reference application (`examples/exactly_once.rs`).
fn app() -> anyhow::Result<PathBuf> {
    common::example("exactly_once")
}

/// A child process, killed if the test gives up on it.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// How a run of the application ended, and what it printed.
struct Run {
    status: ExitStatus,
    lines: Vec<String>,
    stderr: String,
}

impl Run {
    /// Its transactions, in order.
    fn transactions(&self) -> anyhow::Result<Vec<Txn>> {
        self.lines
            .iter()
            .filter(|line| line.starts_with("txn "))
            .map(|line| Txn::parse(line))
            .collect()
    }
}

/// One `txn T OUTCOME records=N offsets=P:O,...` line.
#[derive(Debug)]
struct Txn {
    number: u32,
    outcome: String,
    records: usize,
    offsets: BTreeMap<i32, i64>,
}

impl Txn {
    fn parse(line: &str) -> anyhow::Result<Self> {
        let parsed = || -> Option<Self> {
            let mut words = line.split_whitespace();
            let _txn = words.next()?;
            let number = words.next()?.parse().ok()?;
            let outcome = words.next()?.to_string();
            let records = words.next()?.strip_prefix("records=")?.parse().ok()?;
            let mut offsets = BTreeMap::new();
            for pair in words.next()?.strip_prefix("offsets=")?.split(',') {
                let (p, o) = pair.split_once(':')?;
                offsets.insert(p.parse().ok()?, o.parse().ok()?);
            }
            Some(Self {
                number,
                outcome,
                records,
                offsets,
            })
        };
        parsed().with_context(|| format!("cannot parse {line:?}"))
    }
}

/// Run the application over the test's topics until it exits, with `extra`
/// arguments after the common ones.
fn run_app(bootstrap: &str, extra: &[&str]) -> anyhow::Result<Run> {
    let app = app()?;
    let started = Instant::now();
    let mut child = Running(
        Command::new(app)
            .args(["--bootstrap-server", bootstrap, "--input", INPUT])
            .args(["--output", OUTPUT, "--group", GROUP])
            .args(["--transactional-id", TRANSACTIONAL_ID, "--batch", BATCH])
            .args(["--abort-every", &ABORT_EVERY.to_string()])
            .args(["--transactions", "1000"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot start exactly_once")?,
    );
    // Drained as the child writes, so it never blocks on a full pipe.
    let stdout = drain(child.0.stdout.take().context("no stdout")?);
    let stderr = drain(child.0.stderr.take().context("no stderr")?);
    let mut status = None;
    common::wait_until(RUN_TIMEOUT, "the application to exit", || {
        status = child.0.try_wait()?;
        Ok(status.is_some())
    })?;
    let status = status.context("no exit status")?;
    let joined = |reader: JoinHandle<String>| reader.join().unwrap_or_default();
    let run = Run {
        status,
        lines: joined(stdout).lines().map(str::to_owned).collect(),
        stderr: joined(stderr),
    };
    println!(
        "run {extra:?}: {} in {:.1?}, last line {:?}",
        run.status,
        started.elapsed(),
        run.lines.last()
    );
    Ok(run)
}

fn drain(mut pipe: impl Read + Send + 'static) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = pipe.read_to_string(&mut text);
        text
    })
}

/// The group's committed offsets of the input, by partition (none where it
/// has committed nothing). With `isolation` read_committed the fetch asks
/// for stable offsets, and waits out a transaction's pending ones.
fn group_offsets(bootstrap: &str, isolation: &str) -> anyhow::Result<BTreeMap<i32, i64>> {
    let consumer: BaseConsumer = common::consumer_config(bootstrap)
        .set("group.id", GROUP)
        .set("isolation.level", isolation)
        .create()?;
    let mut asked = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        asked.add_partition(INPUT, p);
    }
    let committed = consumer.committed_offsets(asked, TIMEOUT)?;
    Ok(committed
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some((e.partition(), o)),
            _ => None,
        })
        .collect())
}

/// Each partition's end: the high watermark for read_uncommitted, the last
/// stable offset for read_committed.
fn ends(bootstrap: &str, topic: &str, isolation: &str) -> anyhow::Result<BTreeMap<i32, i64>> {
    let consumer: BaseConsumer = common::consumer_config(bootstrap)
        .set("isolation.level", isolation)
        .create()?;
    (0..PARTITIONS)
        .map(|p| Ok((p, consumer.fetch_watermarks(topic, p, TIMEOUT)?.1)))
        .collect()
}

/// Every `(key, value)` a consumer with `isolation` reads from `topic`, up
/// to the end that isolation allows, sorted.
fn read_to_end(
    bootstrap: &str,
    topic: &str,
    isolation: &str,
) -> anyhow::Result<Vec<(String, String)>> {
    // librdkafka's default isolation is read_committed: always set it.
    let consumer: BaseConsumer = common::consumer_config(bootstrap)
        .set("isolation.level", isolation)
        .create()?;
    let ends = ends(bootstrap, topic, isolation)?;
    let mut assignment = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        assignment.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    consumer.assign(&assignment)?;
    let text =
        |bytes: Option<&[u8]>| String::from_utf8_lossy(bytes.unwrap_or_default()).into_owned();
    let mut records = Vec::new();
    // Markers are never delivered: the read is done when the position (which
    // moves past them) reaches each end. Each check takes what has arrived,
    // so that wait_until's pause comes once per fetch, not once per record.
    common::wait_until(TIMEOUT, "reading to the end", || {
        let mut wait = Duration::from_millis(100);
        for _ in 0..RECORDS {
            let Some(message) = consumer.poll(wait) else {
                break;
            };
            let message = message?;
            records.push((text(message.key()), text(message.payload())));
            wait = Duration::ZERO;
        }
        let position = consumer.position()?;
        Ok(position.elements().iter().all(|e| {
            let end = ends.get(&e.partition()).copied().unwrap_or(0);
            match e.offset() {
                Offset::Offset(at) => at >= end,
                _ => end == 0,
            }
        }))
    })?;
    records.sort();
    Ok(records)
}

fn produce_input(bootstrap: &str) -> anyhow::Result<Vec<(String, String)>> {
    let producer: ThreadedProducer<DefaultProducerContext> =
        common::producer_config(bootstrap).create()?;
    let mut inputs = Vec::with_capacity(RECORDS);
    for i in 0..RECORDS {
        let (key, value) = (format!("key-{i:03}"), format!("value-{i:03}"));
        let partition = i32::try_from(i)? % PARTITIONS;
        producer
            .send(
                BaseRecord::to(INPUT)
                    .partition(partition)
                    .key(&key)
                    .payload(&value),
            )
            .map_err(|(e, _)| e)?;
        inputs.push((key, value));
    }
    producer.flush(TIMEOUT)?;
    Ok(inputs)
}

#[test]
fn crashed_and_aborted_transactions_leave_each_input_in_the_output_exactly_once()
-> anyhow::Result<()> {
    let broker = Broker::start(&[
        "--set",
        "transaction.abort.timed.out.transaction.cleanup.interval.ms=200",
        "--set",
        "transaction.state.log.num.partitions=4",
    ])?;
    let bootstrap = broker.bootstrap();
    common::create_topic_blocking(&bootstrap, INPUT, PARTITIONS, &[])?;
    common::create_topic_blocking(&bootstrap, OUTPUT, PARTITIONS, &[])?;
    let inputs = produce_input(&bootstrap)?;
    let input_ends = ends(&bootstrap, INPUT, "read_uncommitted")?;
    ensure!(
        input_ends.values().sum::<i64>() == i64::try_from(RECORDS)?,
        "input ends {input_ends:?}"
    );

    // The group's offsets as the committed transactions set them, partition
    // by partition; the aborted and crashed ones must leave no trace.
    let mut expected_offsets = BTreeMap::new();
    let mut all = Vec::new();
    for crash_at in CRASH_AT {
        let run = run_app(&bootstrap, &["--crash-at", &crash_at.to_string()])?;
        ensure!(
            run.status.signal() == Some(libc::SIGABRT),
            "the run crashing at {crash_at} ended {}:\n{}\n{}",
            run.status,
            run.lines.join("\n"),
            run.stderr
        );
        let txns = run.transactions()?;
        let last = txns
            .last()
            .context("the crashed run began no transaction")?;
        ensure!(
            (last.number, last.outcome.as_str()) == (crash_at, "crashing"),
            "the run died at {last:?}, not crashing in transaction {crash_at}"
        );
        fold_commits(&mut expected_offsets, &txns);
        // The crashed transaction is still open, its offsets pending: a
        // fetch that does not ask for stable offsets answers the committed.
        assert_eq!(
            group_offsets(&bootstrap, "read_uncommitted")?,
            expected_offsets,
            "after the run crashing at {crash_at}, offsets of the committed transactions only"
        );
        all.extend(txns);
    }
    let last = run_app(&bootstrap, &[])?;
    ensure!(
        last.status.success()
            && last
                .lines
                .last()
                .is_some_and(|l| l.ends_with("reason=input-exhausted")),
        "the last run ended {}:\n{}\n{}",
        last.status,
        last.lines.join("\n"),
        last.stderr
    );
    let txns = last.transactions()?;
    fold_commits(&mut expected_offsets, &txns);
    all.extend(txns);

    let count = |outcome: &str| all.iter().filter(|t| t.outcome == outcome).count();
    let (committed, aborted, crashed) = (count("committed"), count("aborted"), count("crashing"));
    println!(
        "{} transactions over {} runs: {committed} committed, {aborted} aborted, {crashed} crashed",
        all.len(),
        CRASH_AT.len() + 1
    );
    assert!(all.len() >= 50, "{} transactions", all.len());
    assert!(aborted >= 1, "{aborted} aborted");
    assert!(crashed >= 2, "{crashed} crashed");
    assert_eq!(committed + aborted + crashed, all.len());
    assert_eq!(
        expected_offsets, input_ends,
        "the committed transactions covered the input"
    );

    // Every transaction ended: the last stable offset reaches the high
    // watermark of each output partition.
    common::wait_until(TIMEOUT, "no transaction open on the output", || {
        Ok(ends(&bootstrap, OUTPUT, "read_committed")?
            == ends(&bootstrap, OUTPUT, "read_uncommitted")?)
    })?;
    let mut transformed: Vec<(String, String)> = inputs
        .iter()
        .map(|(key, value)| (key.clone(), format!("{value}-out")))
        .collect();
    transformed.sort();
    let output = read_to_end(&bootstrap, OUTPUT, "read_committed")?;
    assert_eq!(output.len(), RECORDS, "each input once in the output");
    assert_eq!(output, transformed, "each input transformed, once");

    // The aborted and crashed transactions' records are in the log, hidden.
    let written: usize = all.iter().map(|t| t.records).sum();
    let logged = read_to_end(&bootstrap, OUTPUT, "read_uncommitted")?;
    assert!(logged.len() > RECORDS, "{} records logged", logged.len());
    assert_eq!(logged.len(), written, "every record sent is in the log");

    // Stable offsets (no transaction pending) at the end of the input.
    assert_eq!(group_offsets(&bootstrap, "read_committed")?, input_ends);
    let described = weir_ok(
        &broker,
        &["txn", "describe", TRANSACTIONAL_ID, "--json"],
        b"",
    )?;
    let state: serde_json::Value = serde_json::from_str(&described)?;
    let state = state["state"].as_str().unwrap_or_default().to_owned();
    ensure!(
        matches!(state.as_str(), "CompleteCommit" | "CompleteAbort"),
        "the last transaction is {state:?}"
    );
    Ok(())
}

/// Apply the committed transactions' offsets, in order, as the group
/// coordinator does.
fn fold_commits(offsets: &mut BTreeMap<i32, i64>, txns: &[Txn]) {
    for txn in txns.iter().filter(|t| t.outcome == "committed") {
        offsets.extend(&txn.offsets);
    }
}
