//! Exactly-once consume-transform-produce, from the application's side: read
//! records from one topic, write a transformed record for each to another,
//! and make "this input was processed" and "its output exists" one atomic
//! step. It is a reference for application developers, and the integration
//! tests run it as real processes that crash; it is not a production service.
//!
//! # The pattern
//!
//! The application is a consumer in a group and a transactional producer.
//! For each batch of input records it:
//!
//! 1. begins a transaction,
//! 2. produces the output records,
//! 3. sends the consumer's position (the offset after each partition's last
//!    record read) to the transaction as the group's offsets
//!    (`send_offsets_to_transaction`), and
//! 4. commits the transaction.
//!
//! The output records and the group's offsets commit together or not at
//! all. An output exists if and only if the group has moved past its input,
//! so whatever happens, each input is reflected in the output exactly once.
//!
//! # Why read_committed
//!
//! The input may itself be the output of a transactional producer (this
//! application's, upstream). A read_uncommitted consumer would transform
//! records of transactions that are later aborted, and their outputs would
//! commit. A read_committed consumer reads only up to the last stable offset
//! and never sees an aborted record. Downstream consumers of the output must
//! read_committed too, or they see this application's aborted outputs.
//!
//! # Why the offsets go into the transaction
//!
//! Committing the offsets apart from the transaction (the consumer's
//! `commit`, or auto commit) leaves a gap: commit the offsets first and a
//! crash before the transaction commits loses the batch; commit the
//! transaction first and a crash before the offsets commit processes the
//! batch twice. Sent to the transaction, they are written by the group
//! coordinator as pending, and the commit marker makes them count. Auto
//! commit is off (`enable.auto.commit=false`).
//!
//! # Why rewind after an abort
//!
//! An aborted transaction discards its outputs and its offsets, but not the
//! consumer's position: the consumer has read past the batch, and the next
//! transaction would start after it, losing it. So after an abort the
//! application seeks each assigned partition back to the group's committed
//! offset (the start, with none committed), and reads the batch again.
//!
//! # What a crash leaves behind, and who ends it
//!
//! A process that dies between its sends and its commit leaves a
//! transaction open: its output records are in the log (read_committed
//! consumers do not see them, and cannot read past them) and its offsets are
//! pending at the group coordinator. The next instance with the same
//! `transactional.id` ends it: its `init_transactions` fences the dead
//! producer (the epoch is bumped, so a zombie can no longer write) and
//! aborts its open transaction. Only then does this application start its
//! consumer, which therefore reads the group's last committed offsets and
//! processes the dead transaction's batch again. With no next instance, the
//! broker aborts the transaction once it has been open for
//! `transaction.timeout.ms`.
//!
//! The consumer's `group.instance.id` is the transactional id as well (static
//! membership): a restarted instance takes its own place in the group at
//! once, instead of waiting for the dead one's session to time out. Both ids
//! name the instance across restarts, so each instance needs its own.
//!
//! # This example
//!
//! The transform keeps the key and appends `-out` to the value (a record
//! without a value gets `-out`). The output partition is chosen by the
//! producer's default partitioner from the key.
//!
//! `--abort-every K` aborts every K-th transaction instead of committing it,
//! and `--crash-at T` kills the process in transaction T after its records
//! (flushed, so they are in the log) and offsets are sent. Transactions are
//! numbered from 1 in each process. The process prints one line per
//! transaction, `txn T committed records=N offsets=P:O,...` (or `aborted`,
//! or `crashing`), with the offsets sent to it, and ends with
//! `done committed=C aborted=A reason=R`, where R is `transactions` after
//! `--transactions` transactions ended, or `input-exhausted` when every
//! assigned input partition was read to its end (a stop for batch runs and
//! tests; a service would keep polling). It exits 1 if no input arrives for
//! 30 s.
//!
//! # Running it
//!
//! ```sh
//! cargo run --release -- serve
//! cargo run --example exactly_once -- --bootstrap-server 127.0.0.1:9092 \
//!     --input orders --output orders-enriched --group enricher \
//!     --transactional-id enricher-1 --transactions 100
//! ```
//!
//! This example runs one instance per group. With several, a rebalance can
//! take partitions away mid-transaction: a production application aborts
//! (or commits) its transaction when its partitions are revoked, and the
//! group metadata sent with the offsets lets the coordinator refuse offsets
//! from a member of an older generation.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Parser;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// How long `init_transactions`, `send_offsets_to_transaction`,
/// `commit_transaction`, `abort_transaction`, a flush, a seek and a fetch of
/// the committed offsets may take.
const CLIENT_CALL_TIMEOUT_MS: u64 = 30_000;
/// How long the application waits for the first record of a batch before it
/// gives up (exit 1).
const INPUT_IDLE_TIMEOUT_MS: u64 = 30_000;
/// How long one poll waits. A batch ends early when a poll finds nothing.
const POLL_MS: u64 = 100;
/// What the transform appends to each value.
const OUTPUT_SUFFIX: &[u8] = b"-out";

const EXAMPLES: &str = "\
Examples (from the source tree, `cargo run --example exactly_once -- ARGS`):
  # Transform everything in `orders` into `orders-enriched`, 10 records a
  # transaction, stopping after 100 transactions or at the end of the input:
  exactly_once --bootstrap-server 127.0.0.1:9092 --input orders \\
      --output orders-enriched --group enricher --transactional-id enricher-1 \\
      --transactions 100

  # Abort every 4th transaction, and die in the 3rd before it commits; the
  # next run with the same transactional id aborts it and carries on:
  exactly_once --bootstrap-server 127.0.0.1:9092 --input orders \\
      --output orders-enriched --group enricher --transactional-id enricher-1 \\
      --transactions 100 --abort-every 4 --crash-at 3";

/// Exactly-once consume-transform-produce over Kafka transactions.
///
/// Reads `--input` as a read_committed consumer in `--group`, and for each
/// batch of up to `--batch` records writes, in one transaction, a record to
/// `--output` for each (same key, the value with `-out` appended) together
/// with the group's new offsets. After an abort it seeks back to the
/// committed offsets. A run that crashes leaves its transaction open; the
/// next run with the same `--transactional-id` aborts it at start.
///
/// Prints `txn T committed|aborted|crashing records=N offsets=P:O,...` per
/// transaction and `done committed=C aborted=A reason=transactions|input-exhausted`
/// at the end; exits 1 if no input arrives for 30 s.
#[derive(Debug, Parser)]
#[command(name = "exactly_once", after_help = EXAMPLES)]
struct Cli {
    /// The broker to bootstrap from.
    #[arg(long, value_name = "HOST:PORT")]
    bootstrap_server: String,
    /// The topic the records are read from.
    #[arg(long, value_name = "TOPIC")]
    input: String,
    /// The topic the transformed records are written to.
    #[arg(long, value_name = "TOPIC")]
    output: String,
    /// The consumer group whose committed offsets say how far the input is
    /// processed.
    #[arg(long, value_name = "GROUP")]
    group: String,
    /// The producer's transactional id, also the consumer's
    /// `group.instance.id`: one per instance, the same across its restarts.
    #[arg(long, value_name = "ID")]
    transactional_id: String,
    /// The most input records one transaction takes.
    #[arg(long, value_name = "N", default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    batch: u32,
    /// Stop after this many transactions have ended (committed or aborted).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    transactions: u32,
    /// Abort the transactions whose number is a multiple of K, instead of
    /// committing them.
    #[arg(long, value_name = "K", value_parser = clap::value_parser!(u32).range(1..))]
    abort_every: Option<u32>,
    /// Abort the process in transaction T, after its records are in the log
    /// and its offsets are sent, before it commits.
    #[arg(long, value_name = "T", value_parser = clap::value_parser!(u32).range(1..))]
    crash_at: Option<u32>,
    /// The producer's `transaction.timeout.ms`: how long the broker lets a
    /// transaction stay open before it aborts it.
    #[arg(long, value_name = "MS", default_value_t = 60_000,
          value_parser = clap::value_parser!(u32).range(1_000..=i64::from(i32::MAX)))]
    transaction_timeout_ms: u32,
}

/// A transactional producer whose delivery reports a background thread
/// polls (which committing and aborting need).
type TxnProducer = ThreadedProducer<DefaultProducerContext>;

/// How a transaction ended.
enum Outcome {
    Committed,
    /// Aborted on purpose (`--abort-every`).
    Aborted,
    /// The commit failed with an error that requires an abort (say a record
    /// could not be delivered); aborted.
    CommitFailed(KafkaError),
}

impl Outcome {
    /// What its line says.
    fn word(&self) -> &'static str {
        match self {
            Outcome::Committed => "committed",
            Outcome::Aborted | Outcome::CommitFailed(_) => "aborted",
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Print one line on stdout and flush it: tests read these lines as they come.
fn say(line: std::fmt::Arguments<'_>) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()
}

fn call_timeout() -> Duration {
    Duration::from_millis(CLIENT_CALL_TIMEOUT_MS)
}

/// The loop: batch, transaction, outcome, until `--transactions` ended or
/// the input is exhausted.
fn run(cli: &Cli) -> anyhow::Result<()> {
    // First the producer: its init_transactions aborts a dead predecessor's
    // open transaction, so the consumer below finds no pending offsets and
    // starts from the last committed ones.
    let producer = transactional_producer(cli)?;
    let mut input = Input::subscribe(cli)?;
    let (mut committed, mut aborted) = (0u32, 0u32);
    let mut t = 0u32;
    let reason = loop {
        if t == cli.transactions {
            break "transactions";
        }
        let Some(batch) = input.next_batch(cli.batch)? else {
            break "input-exhausted";
        };
        t += 1;
        let (outcome, offsets) = transaction(cli, &producer, &mut input, t, &batch)?;
        match &outcome {
            Outcome::Committed => committed += 1,
            Outcome::Aborted | Outcome::CommitFailed(_) => aborted += 1,
        }
        let why = match &outcome {
            Outcome::CommitFailed(err) => format!(" (commit failed: {err})"),
            Outcome::Committed | Outcome::Aborted => String::new(),
        };
        say(format_args!(
            "txn {t} {} records={} offsets={offsets}{why}",
            outcome.word(),
            batch.len()
        ))?;
    };
    say(format_args!(
        "done committed={committed} aborted={aborted} reason={reason}"
    ))?;
    Ok(())
}

/// The transactional producer, with any previous instance's transaction
/// aborted.
fn transactional_producer(cli: &Cli) -> anyhow::Result<TxnProducer> {
    let producer: TxnProducer = ClientConfig::new()
        .set("bootstrap.servers", &cli.bootstrap_server)
        .set("transactional.id", &cli.transactional_id)
        .set(
            "transaction.timeout.ms",
            cli.transaction_timeout_ms.to_string(),
        )
        .create()
        .context("cannot create the transactional producer")?;
    producer
        .init_transactions(call_timeout())
        .context("init_transactions")?;
    Ok(producer)
}

/// One transaction over `batch`: its outputs and offsets, then the crash,
/// abort or commit `cli` asks for. Returns how it ended and the offsets sent
/// to it, as `P:O,...`.
fn transaction(
    cli: &Cli,
    producer: &TxnProducer,
    input: &mut Input,
    t: u32,
    batch: &[OwnedMessage],
) -> anyhow::Result<(Outcome, String)> {
    producer.begin_transaction().context("begin_transaction")?;
    for record in batch {
        let value = transform(record.payload());
        let mut output = BaseRecord::<[u8], [u8]>::to(&cli.output).payload(value.as_slice());
        if let Some(key) = record.key() {
            output = output.key(key);
        }
        producer
            .send(output)
            .map_err(|(err, _record)| err)
            .with_context(|| format!("cannot send to {}", cli.output))?;
    }
    let offsets = input.positions()?;
    let group = input
        .consumer
        .group_metadata()
        .context("the consumer has no group metadata")?;
    producer
        .send_offsets_to_transaction(&offsets, &group, call_timeout())
        .context("send_offsets_to_transaction")?;
    let shown = show(&offsets);
    if cli.crash_at == Some(t) {
        crash(producer, t, batch.len(), &shown);
    }
    if cli.abort_every.is_some_and(|k| t.is_multiple_of(k)) {
        // Flushed first only so that the aborted records reach the log,
        // where the tests find them; aborting needs no flush.
        producer.flush(call_timeout()).context("flush")?;
        abort_and_rewind(producer, input)?;
        return Ok((Outcome::Aborted, shown));
    }
    match producer.commit_transaction(call_timeout()) {
        Ok(()) => Ok((Outcome::Committed, shown)),
        Err(err) => {
            let abortable = matches!(&err, KafkaError::Transaction(e) if e.txn_requires_abort());
            if !abortable {
                return Err(err).context("commit_transaction");
            }
            abort_and_rewind(producer, input)?;
            Ok((Outcome::CommitFailed(err), shown))
        }
    }
}

/// The transform: the value with `-out` appended.
fn transform(value: Option<&[u8]>) -> Vec<u8> {
    let mut out = value.unwrap_or_default().to_vec();
    out.extend_from_slice(OUTPUT_SUFFIX);
    out
}

fn abort_and_rewind(producer: &TxnProducer, input: &mut Input) -> anyhow::Result<()> {
    producer
        .abort_transaction(call_timeout())
        .context("abort_transaction")?;
    input.rewind()
}

/// Die as a crashed application would, with the transaction open: no
/// commit, no abort, no cleanup. The records are flushed first so that they
/// are in the log.
fn crash(producer: &TxnProducer, t: u32, records: usize, offsets: &str) -> ! {
    // Dying either way: a flush or stdout that fails changes nothing.
    let _ = producer.flush(call_timeout());
    let _ = say(format_args!(
        "txn {t} crashing records={records} offsets={offsets}"
    ));
    std::process::abort()
}

/// Offsets as `P:O,...`, in partition order.
fn show(offsets: &TopicPartitionList) -> String {
    let mut pairs: Vec<(i32, i64)> = offsets
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some((e.partition(), o)),
            _ => None,
        })
        .collect();
    pairs.sort_unstable();
    pairs
        .iter()
        .map(|(p, o)| format!("{p}:{o}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The input side: a read_committed consumer in the group, and which of its
/// partitions it has read to the end.
struct Input {
    consumer: BaseConsumer,
    topic: String,
    /// Partitions whose last event was the end of the partition
    /// (`enable.partition.eof`), not a record.
    at_end: BTreeSet<i32>,
}

impl Input {
    fn subscribe(cli: &Cli) -> anyhow::Result<Self> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &cli.bootstrap_server)
            .set("group.id", &cli.group)
            .set("group.instance.id", &cli.transactional_id)
            .set("isolation.level", "read_committed")
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "true")
            .create()
            .context("cannot create the consumer")?;
        consumer
            .subscribe(&[cli.input.as_str()])
            .with_context(|| format!("cannot subscribe to {}", cli.input))?;
        Ok(Self {
            consumer,
            topic: cli.input.clone(),
            at_end: BTreeSet::new(),
        })
    }

    /// Up to `max` records: waits for the first (at most
    /// `INPUT_IDLE_TIMEOUT_MS`), then takes those that arrive without
    /// waiting. `None` once every assigned partition is read to its end.
    fn next_batch(&mut self, max: u32) -> anyhow::Result<Option<Vec<OwnedMessage>>> {
        let max = usize::try_from(max).context("--batch does not fit in memory")?;
        let deadline = Instant::now() + Duration::from_millis(INPUT_IDLE_TIMEOUT_MS);
        let mut batch = Vec::with_capacity(max);
        while batch.len() < max {
            match self.consumer.poll(Duration::from_millis(POLL_MS)) {
                Some(Ok(record)) => {
                    self.at_end.remove(&record.partition());
                    batch.push(record.detach());
                }
                Some(Err(KafkaError::PartitionEOF(partition))) => {
                    self.at_end.insert(partition);
                }
                Some(Err(err)) => return Err(err).context("cannot poll the consumer"),
                None if !batch.is_empty() => break,
                None if self.exhausted()? => return Ok(None),
                None if Instant::now() >= deadline => bail!(
                    "no record arrived from {} for {INPUT_IDLE_TIMEOUT_MS} ms",
                    self.topic
                ),
                None => {}
            }
        }
        Ok(Some(batch))
    }

    /// Whether the consumer has partitions and has read each to its end.
    fn exhausted(&self) -> anyhow::Result<bool> {
        let assignment = self.consumer.assignment().context("assignment")?;
        let assigned = assignment.elements();
        Ok(!assigned.is_empty()
            && assigned
                .iter()
                .all(|e| self.at_end.contains(&e.partition())))
    }

    /// The offset after the last record read, of each partition read since
    /// the assignment or the last rewind.
    fn positions(&self) -> anyhow::Result<TopicPartitionList> {
        let position = self.consumer.position().context("position")?;
        let mut offsets = TopicPartitionList::new();
        for e in position.elements() {
            if let Offset::Offset(o) = e.offset() {
                offsets.add_partition_offset(e.topic(), e.partition(), Offset::Offset(o))?;
            }
        }
        Ok(offsets)
    }

    /// Seek every assigned partition back to the group's committed offset
    /// (the start, with none), after an abort discarded what was read since.
    fn rewind(&mut self) -> anyhow::Result<()> {
        let committed = self
            .consumer
            .committed(call_timeout())
            .context("cannot fetch the committed offsets")?;
        for e in committed.elements() {
            let to = match e.offset() {
                Offset::Offset(o) => Offset::Offset(o),
                _ => Offset::Beginning,
            };
            self.consumer
                .seek(e.topic(), e.partition(), to, call_timeout())
                .with_context(|| format!("cannot seek {}/{}", e.topic(), e.partition()))?;
        }
        // A seek resets the position, and the end is reported again when
        // the partition is read to it.
        self.at_end.clear();
        Ok(())
    }
}
