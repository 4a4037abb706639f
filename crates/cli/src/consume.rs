//! `weir consume`: prints a topic's records as text or JSON lines, read by a
//! librdkafka consumer. Without a group it assigns the partitions itself at
//! the asked position; with `--group` it subscribes and commits what it
//! printed. Without `--follow` it stops at the end of its partitions (the
//! high watermark when it gets there), so scripts can read a topic and go on.
//! With `--share-group` it is a share group member instead (`share`).

mod share;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer as _};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Headers as _, Message as _};
use rdkafka::{Offset, TopicPartitionList};

use super::Printed;
use crate::{CliError, Result};
use weir_client::{Client, Led};

/// How long `--group` waits for the group to assign partitions before
/// giving up (without `--follow`).
const GROUP_JOIN_TIMEOUT_MS: u64 = 30_000;
/// How long one poll of the consumer waits.
const POLL_MS: u64 = 200;
/// How long the final commit of a `--group` run may take.
const COMMIT_TIMEOUT_MS: u64 = 10_000;
/// The group id librdkafka requires even when partitions are assigned
/// directly; nothing is ever committed under it.
const UNUSED_GROUP_ID: &str = "weir-cli-consume";

const CONSUME_EXAMPLES: &str = "\
Examples:
  weir consume orders --from-beginning
  weir consume orders --from-beginning -n 10 --format json
  weir consume orders --offset 42 --partition 0
  weir consume orders --from-datetime 2026-11-24T08:00:00Z
  weir consume orders --from-datetime 2026-11-24T10:00:00+02:00
  weir consume orders --group billing --follow
  weir consume orders --from-beginning --isolation read_committed
  weir consume orders --share-group orders-workers -n 10
  weir consume orders --share-group orders-workers --reject-if '^poison' --follow
  weir consume orders --share-group orders-workers --ack release -n 1

--from-datetime takes an RFC 3339 time with Z or a +HH:MM/-HH:MM offset; a
time without a zone (2026-11-24T08:00:00) is UTC, not the local zone.

Without --from-beginning, --offset or --from-datetime, only records produced
from now on are read (with --group: from the group's committed offsets).
Without --follow the command exits once it has reached the end of every
partition it reads, or after -n records.

--format json prints one object a line: topic, partition, offset, timestamp
(ms since the epoch), key, value and headers. A key, value or header value
that is not UTF-8 prints as {\"base64\": \"...\"}; a missing one as null.
With --share-group it also has delivery_count.

--share-group joins a share group (KIP-932; the broker needs
group.share.enable=true): records are shared out one by one among its
members, each acknowledged after it is printed: --ack accept (the default),
release (delivered again) or reject (given up on, to the group's dead-letter
topic, dlq.<group> by default). --reject-if REGEX rejects the records whose
value matches. Without --follow it exits once a fetch finds nothing more.";

/// `weir consume`.
#[derive(Debug, Args)]
#[command(after_help = CONSUME_EXAMPLES)]
pub struct ConsumeArgs {
    /// The topic.
    topic: String,
    /// Start at the first record still kept (log-start offset).
    #[arg(long, conflicts_with_all = ["offset", "from_datetime"])]
    from_beginning: bool,
    /// Start at this offset (in every partition read; see --partition).
    #[arg(long, value_parser = clap::value_parser!(i64).range(0..),
          conflicts_with = "from_datetime")]
    offset: Option<i64>,
    /// Start at the first record at or after this time: RFC 3339 with Z or an
    /// offset (2026-11-24T10:00:00+02:00); a time without a zone is UTC.
    #[arg(long, value_name = "TIME", value_parser = super::parse_datetime_ms)]
    from_datetime: Option<i64>,
    /// Read only this partition.
    #[arg(long, value_parser = clap::value_parser!(i32).range(0..))]
    partition: Option<i32>,
    /// Consume as a member of this consumer group and commit the offsets
    /// printed; the group decides the partitions and the start.
    #[arg(long, conflicts_with_all = ["offset", "from_datetime", "partition"])]
    group: Option<String>,
    /// Stop after this many records.
    #[arg(short = 'n', long = "count", value_name = "COUNT",
          value_parser = clap::value_parser!(u64).range(1..))]
    count: Option<u64>,
    /// Keep waiting for new records instead of exiting at the end.
    #[arg(long)]
    follow: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// Which records of transactions to read (Kafka's `isolation.level`):
    /// read_committed skips records of aborted and still-open transactions
    /// and stops at the last stable offset.
    #[arg(long, value_enum, default_value_t = Isolation::ReadUncommitted)]
    isolation: Isolation,
    /// Consume as a member of this share group (KIP-932): records are
    /// shared out among the members one by one and acknowledged after they
    /// are printed (see --ack and --reject-if).
    #[arg(long, value_name = "GROUP",
          conflicts_with_all = ["group", "offset", "from_datetime", "partition", "from_beginning"])]
    share_group: Option<String>,
    /// With --share-group: how each printed record is acknowledged.
    #[arg(long, value_enum, default_value_t = share::Ack::Accept, requires = "share_group")]
    ack: share::Ack,
    /// With --share-group: reject the records whose value (as UTF-8)
    /// matches this regular expression, whatever --ack says.
    #[arg(long, value_name = "REGEX", requires = "share_group", value_parser = parse_regex)]
    reject_if: Option<regex::Regex>,
}

/// A `--reject-if` expression, checked when the arguments are parsed.
fn parse_regex(text: &str) -> std::result::Result<regex::Regex, String> {
    regex::Regex::new(text).map_err(|e| format!("not a regular expression: {e}"))
}

/// Kafka's `isolation.level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Isolation {
    /// Every record, transactional or not, up to the high watermark (the
    /// default, as Kafka's console consumer has it).
    #[value(name = "read_uncommitted")]
    ReadUncommitted,
    /// Only records of committed transactions, up to the last stable offset.
    #[value(name = "read_committed")]
    ReadCommitted,
}

impl Isolation {
    fn config_value(self) -> &'static str {
        match self {
            Isolation::ReadUncommitted => "read_uncommitted",
            Isolation::ReadCommitted => "read_committed",
        }
    }
}

/// How records are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    /// The value, one a line (bytes that are not UTF-8 shown as U+FFFD).
    Text,
    /// One JSON object a line with key, value, headers, partition, offset and timestamp.
    Json,
}

/// Runs `weir consume` against `brokers`.
pub fn run(brokers: &str, args: ConsumeArgs) -> Result<()> {
    let mut client = super::connect(brokers)?;
    let metadata = client.metadata(Some(std::slice::from_ref(&args.topic)))?;
    let Some(topic) = metadata.topics.first() else {
        return Err(CliError::NoMetadata {
            topic: args.topic.clone(),
        });
    };
    weir_client::check(topic.error_code, || format!("topic {}", args.topic))?;
    if let Some(group) = args.share_group.clone() {
        let stop = stop_on_signal()?;
        return share::run(&mut client, &args, &group, &stop);
    }

    let mut config = super::rdkafka_config(brokers);
    config
        .set("group.id", args.group.as_deref().unwrap_or(UNUSED_GROUP_ID))
        .set("enable.partition.eof", "true")
        .set("isolation.level", args.isolation.config_value())
        .set(
            "auto.offset.reset",
            if args.from_beginning {
                "earliest"
            } else {
                "latest"
            },
        );
    if args.group.is_some() {
        // Offsets are stored only after a record is printed, and committed
        // in the background and once more at the end.
        config
            .set("enable.auto.commit", "true")
            .set("enable.auto.offset.store", "false");
    } else {
        config.set("enable.auto.commit", "false");
    }
    let consumer: BaseConsumer = config
        .create()
        .map_err(CliError::kafka("cannot create the consumer"))?;

    if args.group.is_some() {
        consumer
            .subscribe(&[&args.topic])
            .map_err(CliError::kafka(format!(
                "cannot subscribe to {}",
                args.topic
            )))?;
    } else {
        let mut partitions: Vec<Led> = topic
            .partitions
            .iter()
            .map(|p| Led {
                topic: args.topic.clone(),
                partition: p.partition_index,
                leader: p.leader_id.0,
            })
            .collect();
        if let Some(wanted) = args.partition {
            partitions.retain(|p| p.partition == wanted);
            if partitions.is_empty() {
                return Err(CliError::Failed(format!(
                    "topic {} has no partition {wanted}",
                    args.topic
                )));
            }
        }
        let assignment = start_positions(&mut client, &args, &partitions)?;
        consumer
            .assign(&assignment)
            .map_err(CliError::kafka("cannot assign the partitions"))?;
    }
    let stop = stop_on_signal()?;
    let result = read(&consumer, &args, &stop);
    if args.group.is_some() {
        commit(&consumer)?;
    }
    // Dropping the consumer closes it, which leaves the group at once, so a
    // stopped `--group --follow` does not hold its partitions until the
    // session times out.
    drop(consumer);
    result
}

/// A flag raised by SIGINT or SIGTERM, so that Ctrl-C ends a `--follow`
/// with the group's offsets committed rather than killing the process.
fn stop_on_signal() -> Result<Arc<AtomicBool>> {
    use tokio::signal::unix::{SignalKind, signal};

    let stop = Arc::new(AtomicBool::new(false));
    let runtime = super::runtime()?;
    let (mut interrupt, mut terminate) = runtime
        .block_on(async {
            Ok::<_, std::io::Error>((
                signal(SignalKind::interrupt())?,
                signal(SignalKind::terminate())?,
            ))
        })
        .map_err(CliError::io("cannot install the signal handlers"))?;
    let raised = Arc::clone(&stop);
    std::thread::spawn(move || {
        runtime.block_on(async {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
        });
        raised.store(true, Ordering::SeqCst);
    });
    Ok(stop)
}

/// Where each partition starts when no group decides it.
fn start_positions(
    client: &mut Client,
    args: &ConsumeArgs,
    partitions: &[Led],
) -> Result<TopicPartitionList> {
    let mut assignment = TopicPartitionList::new();
    let by_time = match args.from_datetime {
        Some(ms) => {
            let leaderless: Vec<i32> = partitions
                .iter()
                .filter(|p| p.leader < 0)
                .map(|p| p.partition)
                .collect();
            if !leaderless.is_empty() {
                return Err(CliError::Failed(format!(
                    "partitions {leaderless:?} of {} have no leader; cannot look up offsets by time",
                    args.topic
                )));
            }
            Some(client.list_offsets(partitions, ms)?)
        }
        None => None,
    };
    for p in partitions {
        let offset = if args.from_beginning {
            Offset::Beginning
        } else if let Some(offset) = args.offset {
            Offset::Offset(offset)
        } else if let Some(by_time) = &by_time {
            match by_time
                .get(&(p.topic.clone(), p.partition))
                .copied()
                .flatten()
            {
                Some(offset) => Offset::Offset(offset),
                // No record that recent: start at the end.
                None => Offset::End,
            }
        } else {
            Offset::End
        };
        assignment
            .add_partition_offset(&args.topic, p.partition, offset)
            .map_err(|source| CliError::Kafka {
                what: format!("cannot assign {}/{}", args.topic, p.partition).into(),
                source,
            })?;
    }
    Ok(assignment)
}

/// Polls and prints until -n records, the end of every partition (without
/// --follow), a closed stdout, or SIGINT / SIGTERM.
fn read(consumer: &BaseConsumer, args: &ConsumeArgs, stop: &AtomicBool) -> Result<()> {
    let started = Instant::now();
    let mut printed = 0u64;
    let mut at_end: HashSet<i32> = HashSet::new();
    loop {
        if stop.load(Ordering::SeqCst) || args.count.is_some_and(|count| printed >= count) {
            return Ok(());
        }
        let assigned = assigned_partitions(consumer)?;
        if !args.follow {
            if !assigned.is_empty() && assigned.iter().all(|p| at_end.contains(p)) {
                return Ok(());
            }
            if assigned.is_empty()
                && args.group.is_some()
                && started.elapsed() > Duration::from_millis(GROUP_JOIN_TIMEOUT_MS)
            {
                return Err(CliError::Failed(format!(
                    "group {} assigned no partition of {} to this consumer within {GROUP_JOIN_TIMEOUT_MS} ms",
                    args.group.as_deref().unwrap_or_default(),
                    args.topic
                )));
            }
        }
        match consumer.poll(Duration::from_millis(POLL_MS)) {
            None => {}
            Some(Err(KafkaError::PartitionEOF(partition))) => {
                at_end.insert(partition);
            }
            Some(Err(err)) => return Err(CliError::kafka("consuming failed")(err)),
            Some(Ok(message)) => {
                at_end.remove(&message.partition());
                let line = match args.format {
                    Format::Text => text_line(&message),
                    Format::Json => json_line(&message)?,
                };
                if super::print_out(&line)? == Printed::ReaderGone {
                    return Ok(());
                }
                printed += 1;
                if args.group.is_some() {
                    consumer
                        .store_offset_from_message(&message)
                        .map_err(CliError::kafka("cannot store the consumed offset"))?;
                }
            }
        }
    }
}

fn assigned_partitions(consumer: &BaseConsumer) -> Result<Vec<i32>> {
    Ok(consumer
        .assignment()
        .map_err(CliError::kafka("cannot read the consumer's assignment"))?
        .elements()
        .iter()
        .map(|element| element.partition())
        .collect())
}

fn commit(consumer: &BaseConsumer) -> Result<()> {
    let deadline = Instant::now() + Duration::from_millis(COMMIT_TIMEOUT_MS);
    loop {
        match consumer.commit_consumer_state(CommitMode::Sync) {
            Ok(()) => return Ok(()),
            // Nothing was consumed, so there is nothing to commit.
            Err(KafkaError::ConsumerCommit(rdkafka::types::RDKafkaErrorCode::NoOffset)) => {
                return Ok(());
            }
            Err(err) if Instant::now() >= deadline => {
                return Err(CliError::kafka("cannot commit the group's offsets")(err));
            }
            Err(_) => {
                consumer.poll(Duration::from_millis(POLL_MS));
            }
        }
    }
}

fn text_line(message: &BorrowedMessage<'_>) -> String {
    let mut line = String::from_utf8_lossy(message.payload().unwrap_or_default()).into_owned();
    line.push('\n');
    line
}

fn json_line(message: &BorrowedMessage<'_>) -> Result<String> {
    let optional = |bytes: Option<&[u8]>| bytes.map_or(serde_json::Value::Null, super::bytes_json);
    let headers: Vec<serde_json::Value> = message
        .headers()
        .map(|headers| {
            headers
                .iter()
                .map(|header| {
                    serde_json::json!({
                        "key": header.key,
                        "value": optional(header.value),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let record = serde_json::json!({
        "topic": message.topic(),
        "partition": message.partition(),
        "offset": message.offset(),
        "timestamp": message.timestamp().to_millis(),
        "key": optional(message.key()),
        "value": optional(message.payload()),
        "headers": headers,
    });
    let mut line = serde_json::to_string(&record).map_err(CliError::Json)?;
    line.push('\n');
    Ok(line)
}
