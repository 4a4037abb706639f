//! `weir dlq redrive`: moves dead letters (KIP-1191's records in a share
//! group's dead-letter topic) back to a topic once their cause is fixed, as
//! RocketMQ's console re-sends dead letters.
//!
//! It reads the dead-letter topic with librdkafka from where the last
//! redrive stopped (the committed offsets of a progress group,
//! `weir-dlq-redrive.<topic>` unless `--group` names one) up to the high
//! watermark it found at the start. Each dead letter that passes every
//! `--where` is produced (acks=all, idempotent) to `--to`: the record's
//! key, value and headers when the dead letter carries a copy
//! (`errors.deadletterqueue.copy.record.enable`), else the original read
//! back from its topic, partition and offset (one that retention has
//! removed is reported as gone). Only once every record is delivered are
//! the progress group's offsets moved to where the read ended, so a failed
//! run can be run again and a finished one is not repeated.
//!
//! What a redrive means (the progress group, the headers, the filters, the
//! copy) is `weir_client::dead_letter`'s, shared with the admin API's
//! `POST /v1/dead-letter-topics/{topic}/redrive`, so the two can be used in
//! turn on one dead-letter topic.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use clap::{Args, Subcommand};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer as _};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Headers as _, Message as _, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{BaseRecord, Producer as _, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};

use weir_client::dead_letter::{self, Content, REDRIVEN_FROM, Source};

use crate::{CliError, Result};

/// How long one poll waits.
const POLL: Duration = Duration::from_millis(200);
/// How long a read may go without a record before it is given up.
const STALL: Duration = Duration::from_secs(30);
/// How long the producer's flush may take.
const FLUSH: Duration = Duration::from_secs(60);

const DLQ_EXAMPLES: &str = "\
Examples:
  weir dlq redrive dlq.orders-workers --to orders --dry-run
  weir dlq redrive dlq.orders-workers --to orders
  weir dlq redrive dlq.orders-workers --to orders --where message='Offset rejected by client.'
  weir dlq redrive dlq.orders-workers --to orders-retry --where partition=3 --json";

/// `weir dlq`.
#[derive(Debug, Args)]
pub struct DlqArgs {
    #[command(subcommand)]
    command: DlqCommand,
}

#[derive(Debug, Subcommand)]
enum DlqCommand {
    /// Move dead letters back to a topic (to their source topic, once the
    /// cause is fixed).
    #[command(after_help = DLQ_EXAMPLES)]
    Redrive(RedriveArgs),
}

/// `weir dlq redrive`.
#[derive(Debug, Args)]
#[command(after_help = "\
Each run goes on from where the last one stopped (the committed offsets of
the progress group) to the end the dead-letter topic had when it started,
and moves the progress group there once every record is delivered; dead
letters a --where leaves out are passed over for good. --from-beginning
reads the whole topic again (records already moved are moved again).

--where KEY=VALUE keeps the dead letters whose __dlq.errors.KEY header is
VALUE: topic, partition, offset, group, delivery.count or message. Several
--where must all hold.

A redriven record has the dead letter's copy of the key, value and headers
(errors.deadletterqueue.copy.record.enable), or else the original read back
from its topic; it keeps its partition when --to is that topic, and carries
the header weir.redriven-from: DLQ-TOPIC/PARTITION/OFFSET.")]
pub struct RedriveArgs {
    /// The dead-letter topic (dlq.<group> by default for share groups).
    topic: String,
    /// Where the records go.
    #[arg(long, value_name = "TOPIC")]
    to: String,
    /// Only the dead letters whose __dlq.errors.KEY header is VALUE.
    #[arg(long = "where", value_name = "KEY=VALUE", value_parser = super::parse_key_value)]
    filters: Vec<(String, String)>,
    /// Read the dead-letter topic from its start, not from where the last
    /// redrive stopped.
    #[arg(long)]
    from_beginning: bool,
    /// The group whose committed offsets keep the progress
    /// [default: weir-dlq-redrive.<TOPIC>].
    #[arg(long)]
    group: Option<String>,
    /// Show what would be moved; produce and commit nothing.
    #[arg(long)]
    dry_run: bool,
    /// Print the outcome as JSON.
    #[arg(long)]
    json: bool,
}

/// Runs `weir dlq`.
pub fn run(brokers: &str, args: DlqArgs) -> Result<()> {
    match args.command {
        DlqCommand::Redrive(args) => redrive(brokers, &args),
    }
}

/// What a redrive did.
#[derive(Debug, Default)]
struct Outcome {
    redriven: u64,
    /// Left out by --where.
    passed_over: u64,
    /// Not a dead letter (no __dlq.errors.topic header).
    not_dead_letters: u64,
    /// Its original is gone from its topic, and it carries no copy.
    gone: Vec<String>,
}

fn redrive(brokers: &str, args: &RedriveArgs) -> Result<()> {
    for (key, _) in &args.filters {
        if !dead_letter::FILTER_KEYS.contains(&key.as_str()) {
            return Err(CliError::Usage(format!(
                "--where {key}=...: KEY is one of {}",
                dead_letter::FILTER_KEYS.join(", ")
            )));
        }
    }
    let mut client = super::connect(brokers)?;
    let metadata = client.metadata(Some(&[args.topic.clone(), args.to.clone()]))?;
    for topic in &metadata.topics {
        let name = topic
            .name
            .as_ref()
            .map(|n| n.0.to_string())
            .unwrap_or_default();
        weir_client::check(topic.error_code, || format!("topic {name}"))?;
    }
    let partitions: Vec<i32> = metadata
        .topics
        .iter()
        .find(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == args.topic))
        .map(|t| t.partitions.iter().map(|p| p.partition_index).collect())
        .unwrap_or_default();
    let to_partitions = metadata
        .topics
        .iter()
        .find(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == args.to))
        .map_or(0, |t| t.partitions.len());
    let group = dead_letter::progress_group(&args.topic, args.group.as_deref());
    let consumer: BaseConsumer = super::rdkafka_config(brokers)
        .set("group.id", &group)
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("auto.offset.reset", "earliest")
        .create()
        .map_err(CliError::kafka("cannot create the consumer"))?;
    // Where each partition starts and ends.
    let mut wanted = TopicPartitionList::new();
    for p in &partitions {
        wanted.add_partition(&args.topic, *p);
    }
    let committed = if args.from_beginning {
        TopicPartitionList::new()
    } else {
        consumer
            .committed_offsets(wanted.clone(), Duration::from_secs(30))
            .map_err(CliError::kafka("cannot read the progress group's offsets"))?
    };
    let mut ends: BTreeMap<i32, i64> = BTreeMap::new();
    let mut assignment = TopicPartitionList::new();
    for p in &partitions {
        let (low, high) = consumer
            .fetch_watermarks(&args.topic, *p, Duration::from_secs(30))
            .map_err(CliError::kafka(format!(
                "cannot list offsets of {}/{p}",
                args.topic
            )))?;
        let start = committed
            .find_partition(&args.topic, *p)
            .and_then(|e| match e.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            })
            .unwrap_or(low)
            .max(low);
        if start < high {
            ends.insert(*p, high);
            assignment
                .add_partition_offset(&args.topic, *p, Offset::Offset(start))
                .map_err(CliError::kafka("cannot assign the dead-letter topic"))?;
        }
    }
    let total: i64 = assignment
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => ends.get(&e.partition()).map(|end| end - o),
            _ => None,
        })
        .sum();
    let producer: ThreadedProducer<_> = super::rdkafka_config(brokers)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .create()
        .map_err(CliError::kafka("cannot create the producer"))?;
    let mut originals = Originals::new(brokers)?;
    let bar = indicatif::ProgressBar::new(u64::try_from(total).unwrap_or(0))
        .with_message(format!("redriving {}", args.topic));
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} records ({elapsed})")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut outcome = Outcome::default();
    let mut dry: Vec<serde_json::Value> = Vec::new();
    if !ends.is_empty() {
        consumer
            .assign(&assignment)
            .map_err(CliError::kafka("cannot assign the dead-letter topic"))?;
    }
    let mut next: HashMap<i32, i64> = HashMap::new();
    let mut last_record = std::time::Instant::now();
    while ends
        .iter()
        .any(|(p, end)| next.get(p).copied().unwrap_or(-1) < *end - 1)
    {
        let message = match consumer.poll(POLL) {
            None => {
                if last_record.elapsed() > STALL {
                    return Err(CliError::Failed(format!(
                        "no record of {} arrived for {} s",
                        args.topic,
                        STALL.as_secs()
                    )));
                }
                continue;
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                // Past the end found at the start (compaction may leave none
                // at the last offsets).
                if let Some(end) = ends.get(&p) {
                    next.insert(p, *end - 1);
                }
                continue;
            }
            Some(Err(e)) => return Err(CliError::kafka("reading the dead-letter topic failed")(e)),
            Some(Ok(m)) => m.detach(),
        };
        last_record = std::time::Instant::now();
        let (p, offset) = (message.partition(), message.offset());
        next.insert(p, offset);
        bar.inc(1);
        if ends.get(&p).is_none_or(|end| offset >= *end) {
            continue;
        }
        let dlq: BTreeMap<String, String> = message
            .headers()
            .map(|h| dead_letter::dead_letter_headers(h.iter().map(|h| (h.key, h.value))))
            .unwrap_or_default();
        let Some(source) = Source::of(&dlq) else {
            outcome.not_dead_letters += 1;
            continue;
        };
        let filters = args.filters.iter().map(|(k, v)| (k.as_str(), v.as_str()));
        if !dead_letter::matches(&dlq, filters) {
            outcome.passed_over += 1;
            continue;
        }
        let from = dead_letter::redriven_from(&args.topic, p, offset);
        let record = match copied(&message) {
            Some(copy) => copy,
            None => match originals.read(&source)? {
                Some(original) => original,
                None => {
                    outcome.gone.push(from);
                    continue;
                }
            },
        };
        if args.dry_run {
            dry.push(serde_json::json!({
                "dead_letter": from,
                "source": source.to_string(),
                "message": dlq.get("message"),
            }));
            if !args.json {
                bar.suspend(|| {
                    println!(
                        "{from} <- {source} ({})",
                        dlq.get("message").map_or("", String::as_str)
                    );
                });
            }
            outcome.redriven += 1;
            continue;
        }
        let mut headers = OwnedHeaders::new();
        for (key, value) in &record.headers {
            headers = headers.insert(Header {
                key,
                value: value.as_deref(),
            });
        }
        headers = headers.insert(Header {
            key: REDRIVEN_FROM,
            value: Some(from.as_bytes()),
        });
        let mut out = BaseRecord::<[u8], [u8]>::to(&args.to).headers(headers);
        if let Some(k) = &record.key {
            out = out.key(k.as_slice());
        }
        if let Some(v) = &record.value {
            out = out.payload(v.as_slice());
        }
        if let Some(partition) = source.keeps_partition(&args.to, to_partitions) {
            out = out.partition(partition);
        }
        producer
            .send(out)
            .map_err(|(e, _)| CliError::kafka(format!("cannot send {from} to {}", args.to))(e))?;
        outcome.redriven += 1;
    }
    bar.finish_and_clear();
    if !args.dry_run {
        producer.flush(FLUSH).map_err(CliError::kafka(
            "not every redriven record was acknowledged",
        ))?;
        if producer.in_flight_count() > 0 {
            return Err(CliError::Failed(
                "not every redriven record was acknowledged; nothing was committed, run again"
                    .to_owned(),
            ));
        }
        if !ends.is_empty() {
            let mut done = TopicPartitionList::new();
            for (p, end) in &ends {
                done.add_partition_offset(&args.topic, *p, Offset::Offset(*end))
                    .map_err(CliError::kafka("cannot build the progress"))?;
            }
            consumer
                .commit(&done, CommitMode::Sync)
                .map_err(CliError::kafka(
                    "cannot commit the progress group's offsets",
                ))?;
        }
    }
    let verb = if args.dry_run {
        "would redrive"
    } else {
        "redrove"
    };
    if args.json {
        let mut json = serde_json::json!({
            "from": args.topic,
            "to": args.to,
            "dry_run": args.dry_run,
            "redriven": outcome.redriven,
            "passed_over": outcome.passed_over,
            "not_dead_letters": outcome.not_dead_letters,
            "gone": outcome.gone,
        });
        if args.dry_run {
            json["records"] = serde_json::Value::Array(dry);
        }
        println!("{json}");
    } else {
        eprintln!(
            "{verb} {} dead letters from {} to {}; {} passed over by --where, {} not dead letters, {} gone from their topic",
            outcome.redriven,
            args.topic,
            args.to,
            outcome.passed_over,
            outcome.not_dead_letters,
            outcome.gone.len()
        );
        for gone in &outcome.gone {
            eprintln!(
                "gone: the original of {gone} is no longer in its topic, and it carries no copy"
            );
        }
    }
    Ok(())
}

/// The headers of `message` that are not dead-letter headers.
fn own_headers(message: &OwnedMessage) -> Vec<(String, Option<Vec<u8>>)> {
    message
        .headers()
        .map(|h| dead_letter::own_headers(h.iter().map(|h| (h.key, h.value))))
        .unwrap_or_default()
}

/// The copy a dead letter carries, if it carries one.
fn copied(message: &OwnedMessage) -> Option<Content> {
    dead_letter::copied(message.key(), message.payload(), own_headers(message))
}

/// Reads originals back from their topics, one record at a time.
struct Originals {
    consumer: BaseConsumer,
}

impl Originals {
    fn new(brokers: &str) -> Result<Self> {
        let consumer = super::rdkafka_config(brokers)
            .set("group.id", "weir-dlq-redrive-reader")
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            .set("auto.offset.reset", "error")
            .create()
            .map_err(CliError::kafka("cannot create the consumer of originals"))?;
        Ok(Self { consumer })
    }

    /// The record at `source`, `None` when its topic no longer holds it.
    fn read(&mut self, source: &Source) -> Result<Option<Content>> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(
            &source.topic,
            source.partition,
            Offset::Offset(source.offset),
        )
        .map_err(CliError::kafka("cannot assign a source partition"))?;
        self.consumer
            .assign(&tpl)
            .map_err(CliError::kafka("cannot assign a source partition"))?;
        let started = std::time::Instant::now();
        loop {
            if started.elapsed() > STALL {
                return Err(CliError::Failed(format!(
                    "reading the original {source} took over {} s",
                    STALL.as_secs()
                )));
            }
            match self.consumer.poll(POLL) {
                None => {}
                Some(Err(KafkaError::PartitionEOF(_))) => return Ok(None),
                Some(Err(KafkaError::MessageConsumption(
                    rdkafka::types::RDKafkaErrorCode::OffsetOutOfRange,
                )))
                | Some(Err(KafkaError::MessageConsumption(
                    rdkafka::types::RDKafkaErrorCode::AutoOffsetReset,
                ))) => return Ok(None),
                Some(Err(e)) => {
                    return Err(CliError::kafka(format!(
                        "cannot read the original {source}"
                    ))(e));
                }
                Some(Ok(m)) if m.offset() == source.offset => {
                    let m = m.detach();
                    return Ok(Some(Content {
                        key: m.key().map(<[u8]>::to_vec),
                        value: m.payload().map(<[u8]>::to_vec),
                        headers: own_headers(&m),
                    }));
                }
                // Compaction removed it; the next record is another's.
                Some(Ok(m)) if m.offset() > source.offset => return Ok(None),
                Some(Ok(_)) => {}
            }
        }
    }
}
