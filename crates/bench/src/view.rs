//! `weir bench view`: what reading a tag-filtered view costs, against
//! reading its whole source and filtering in the client, which is what a
//! Kafka user does without views.
//!
//! The run produces `--count` records to a new source topic, each tagged
//! (`weir.tag`) with one of [`TAGS`] tags. Records come in runs of
//! `--run-length`: the records of a run share a tag and a partition, as a
//! producer that sends one kind of record at a time would write them. With
//! runs of 1 every batch holds many tags; with long runs, most batches one.
//! Two views of the source are created first, so that the broker keeps
//! each batch's tag summary: one of a single tag (1 % of the records) and
//! one of half the tags (50 %).
//!
//! Then, `--rounds` times, each of the three topics is read to its end by
//! one librdkafka consumer, assigned every partition from the beginning:
//! the source, the 1 % view and the 50 % view. Before each read, with
//! `--drop-caches`, the page cache is written back and dropped (root
//! only), so the broker reads from the disk. With `--broker-pid`, the
//! broker's disk reads (`read_bytes` of `/proc/PID/io`) and CPU time
//! (`utime + stime` of `/proc/PID/stat`) are taken before and after.
//! Every view read must give exactly the records of its tags.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Args;
use rdkafka::consumer::Consumer as _;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Headers as _, Message as _, OwnedHeaders};
use rdkafka::producer::Producer as _;
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;

use super::client::{self, Missing};
use super::consume::{self, POLL_MS};
use super::report::{Clock, Progress};
use super::send::{self, index_of_key};
use super::{CommonArgs, Compression, PARTITIONS_MAX, parse_property, parse_record_size};

/// The record header that carries a record's tag (the broker's
/// `weir_storage::TAG_HEADER`; the bench does not link the storage crate).
const TAG_HEADER: &str = "weir.tag";
/// The distinct tags records get: one tag is 1 % of the records.
const TAGS: u64 = 100;
/// The views: a name suffix and how many of the [`TAGS`] tags each reads.
const VIEWS: [(&str, u64); 2] = [("1pct", 1), ("50pct", 50)];
/// The most records one run produces.
const RECORDS_MAX: u64 = 100_000_000;
/// The most rounds of reads.
const ROUNDS_MAX: u32 = 100;
/// A read fails when no record nor partition end arrived for this long.
const READ_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Spreads runs over the tags (Fibonacci hashing), so neighbouring runs
/// get unrelated tags.
const SPREAD_MULTIPLIER: u64 = 0x9E37_79B9_7F4A_7C15;
/// Linux's USER_HZ, the unit of `utime` and `stime` in `/proc/PID/stat`.
const CLOCK_TICKS_PER_S: f64 = 100.0;

pub(super) const VIEW_EXAMPLES: &str = "\
Examples:
  weir bench view --brokers 127.0.0.1:9092 --count 1000000
  sudo weir bench view --topic bench-view-2 --broker-pid 12345 --drop-caches --json
  weir bench view --topic bench-view-3 --run-length 10000 --compression lz4

The run produces --count records (acks=all, idempotent, --size bytes of
value) to --topic, which must not hold records yet, each with a weir.tag
header: one of 100 tags, t00 to t99. The records of one run of --run-length
share their tag and partition; runs go round-robin over the partitions and
are spread over the tags by a hash. Before producing, it creates two views
of the topic (weir.view.source and weir.view.tags, by CreateTopics), so the
broker keeps each batch's tag summary: TOPIC-1pct reads tag t00 (1 % of the
records) and TOPIC-50pct tags t00 to t49 (50 %).

Each round reads the source, then each view, to its end with one consumer
assigned every partition from the beginning, and checks that a view gave
exactly the records of its tags. --drop-caches writes back and drops the
page cache before each read (it needs root), so that --broker-pid's disk
reads (read_bytes of /proc/PID/io) show what the broker read from the disk.
The report gives each read's medians over the rounds: time to the end,
records/s, the source's records/s (records scanned, the source's count over
the time), the broker's disk reads and CPU time, and the disk reads as a
share of the source's.

Exit status: 0 on success; 1 if a record failed, a view gave a record it
should not or missed one, or a read stalled; 3 if no broker answered within
10 s.";

/// `weir bench view`.
#[derive(Debug, Clone, Args)]
pub struct ViewArgs {
    /// Bootstrap brokers, comma-separated host:port.
    #[arg(long, env = "WEIR_BROKERS", default_value = "127.0.0.1:9092")]
    brokers: String,
    /// The source topic; created when missing, and it must hold no records.
    #[arg(long, default_value = "bench-view")]
    topic: String,
    /// Records to produce to the source.
    #[arg(long, default_value_t = 1_000_000,
          value_parser = clap::value_parser!(u64).range(1..=RECORDS_MAX))]
    count: u64,
    /// Partitions to create the topic with when it does not exist.
    #[arg(long, default_value_t = 8,
          value_parser = clap::value_parser!(i32).range(1..=PARTITIONS_MAX))]
    partitions: i32,
    /// Replication factor for a topic this run creates; -1 leaves it to the broker.
    #[arg(long, default_value_t = -1, allow_hyphen_values = true,
          value_parser = clap::value_parser!(i32).range(-1..=i64::from(i16::MAX)))]
    replication_factor: i32,
    /// Size of each record value in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = 100,
          value_parser = parse_record_size)]
    size: usize,
    /// Compression codec of record batches.
    #[arg(long, value_enum, default_value_t = Compression::None)]
    compression: Compression,
    /// Time librdkafka waits to fill a batch (linger.ms).
    #[arg(long, default_value_t = 5)]
    linger_ms: u32,
    /// Consecutive records that share a tag and a partition.
    #[arg(long, default_value_t = 1,
          value_parser = clap::value_parser!(u64).range(1..))]
    run_length: u64,
    /// How many times each topic is read; the report gives medians.
    #[arg(long, default_value_t = 3,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(ROUNDS_MAX)))]
    rounds: u32,
    /// The broker's process id on this machine: its disk reads and CPU time
    /// are taken from /proc before and after each read.
    #[arg(long, value_name = "PID")]
    broker_pid: Option<u32>,
    /// Write back and drop the page cache before each read (needs root), so
    /// that the broker reads from the disk.
    #[arg(long)]
    drop_caches: bool,
    /// Raw librdkafka property, applied last (repeatable), e.g. -X fetch.max.bytes=1048576.
    #[arg(short = 'X', value_name = "KEY=VALUE", value_parser = parse_property)]
    property: Vec<(String, String)>,
    /// Print one JSON object on stdout instead of the text summary, and no progress bar.
    #[arg(long)]
    json: bool,
}

impl ViewArgs {
    /// The options the shared client set-up and progress bar read, for
    /// `topic`.
    fn common(&self, topic: &str) -> CommonArgs {
        CommonArgs {
            brokers: self.brokers.clone(),
            topic: topic.to_owned(),
            count: self.count,
            duration: None,
            partitions: self.partitions,
            replication_factor: self.replication_factor,
            property: self.property.clone(),
            json: self.json,
        }
    }
}

/// The tag of record `index`: its run's, spread over the [`TAGS`] tags.
fn tag_of(index: u64, run_length: u64) -> u64 {
    let run = index / run_length.max(1);
    let fraction = u128::from(run.wrapping_mul(SPREAD_MULTIPLIER));
    // fraction / 2^64 * TAGS < TAGS.
    u64::try_from((fraction * u128::from(TAGS)) >> 64).unwrap_or(0)
}

/// The partition of record `index`: its run's, round-robin.
fn partition_of(index: u64, run_length: u64, partitions: i32) -> i32 {
    let run = index / run_length.max(1);
    let partitions = u64::from(partitions.unsigned_abs().max(1));
    i32::try_from(run % partitions).unwrap_or(0)
}

fn tag_name(tag: u64) -> String {
    format!("t{tag:02}")
}

/// A view's tag expression: tags `t00` up to, not including, `tags`.
fn tag_expression(tags: u64) -> String {
    (0..tags).map(tag_name).collect::<Vec<_>>().join(" || ")
}

/// One topic the rounds read: the source or a view.
struct Target {
    name: String,
    /// The records a read must give.
    expected: u64,
    /// The tags it gives; `None` for the source (every record).
    tags: Option<BTreeSet<Vec<u8>>>,
}

/// The broker's counters that a read moves.
#[derive(Debug, Clone, Copy)]
struct ProcCounters {
    read_bytes: u64,
    cpu_s: f64,
}

/// `read_bytes` from the text of `/proc/PID/io`.
fn parse_io(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix("read_bytes:"))
        .and_then(|value| value.trim().parse().ok())
}

/// `utime + stime` in seconds from the text of `/proc/PID/stat`. The
/// process name (field 2) may hold spaces and parentheses, so the fields
/// are counted from after its last `)`: utime and stime are fields 14 and
/// 15, the 12th and 13th after it.
fn parse_cpu_s(text: &str) -> Option<f64> {
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / CLOCK_TICKS_PER_S)
}

fn proc_counters(pid: u32) -> anyhow::Result<ProcCounters> {
    let read = |file: &str| {
        let path = PathBuf::from(format!("/proc/{pid}/{file}"));
        std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {} (is --broker-pid running?)", path.display()))
    };
    Ok(ProcCounters {
        read_bytes: parse_io(&read("io")?).context("/proc/PID/io has no read_bytes line")?,
        cpu_s: parse_cpu_s(&read("stat")?).context("/proc/PID/stat has no utime and stime")?,
    })
}

/// Writes back dirty pages, then drops the clean ones from the page cache.
fn drop_caches() -> anyhow::Result<()> {
    let status = std::process::Command::new("sync")
        .status()
        .context("cannot run sync")?;
    if !status.success() {
        bail!("sync failed: {status}");
    }
    std::fs::write("/proc/sys/vm/drop_caches", "3")
        .context("cannot write /proc/sys/vm/drop_caches (--drop-caches needs root)")
}

/// One read of one topic.
#[derive(Debug, Clone, Serialize)]
struct Read {
    topic: String,
    records: u64,
    /// Records not of the topic's tags, or of another run.
    wrong: u64,
    /// Key and value bytes received.
    bytes: u64,
    elapsed_s: f64,
    errors: u64,
    last_error: Option<String>,
    /// The broker's disk reads during the read, with --broker-pid.
    disk_read_bytes: Option<u64>,
    /// The broker's CPU seconds during the read, with --broker-pid.
    broker_cpu_s: Option<f64>,
}

/// Reads `target` from the beginning of every partition to its end.
fn read_to_end(
    args: &ViewArgs,
    target: &Target,
    partitions: i32,
    run_id: u64,
) -> anyhow::Result<Read> {
    let mut common = args.common(&target.name);
    // Each partition's end is an event, so the read knows when it is over;
    // first, so that a -X of the user's still wins.
    common
        .property
        .insert(0, ("enable.partition.eof".to_owned(), "true".to_owned()));
    if args.drop_caches {
        drop_caches()?;
    }
    let before = args.broker_pid.map(proc_counters).transpose()?;
    // Connected, and the topic's metadata known, before the clock starts.
    let consumer = consume::create_consumer(&common, "weir-bench-view", [])?;
    consumer
        .fetch_metadata(Some(&target.name), Duration::from_secs(10))
        .with_context(|| format!("cannot read the metadata of {}", target.name))?;
    let mut assignment = TopicPartitionList::new();
    for partition in 0..partitions {
        assignment
            .add_partition_offset(&target.name, partition, Offset::Beginning)
            .context("cannot build the partition assignment")?;
    }
    let started = Instant::now();
    consumer
        .assign(&assignment)
        .context("cannot assign the partitions")?;
    let mut read = Read {
        topic: target.name.clone(),
        records: 0,
        wrong: 0,
        bytes: 0,
        elapsed_s: 0.0,
        errors: 0,
        last_error: None,
        disk_read_bytes: None,
        broker_cpu_s: None,
    };
    let mut ended = BTreeSet::new();
    let mut last_event = Instant::now();
    while ended.len() < usize::try_from(partitions).unwrap_or(0) {
        if last_event.elapsed() >= READ_IDLE_TIMEOUT {
            read.errors += 1;
            read.last_error = Some(format!(
                "no record and no partition end for {} s; partitions ended: {ended:?}",
                READ_IDLE_TIMEOUT.as_secs()
            ));
            break;
        }
        match consumer.poll(Duration::from_millis(POLL_MS)) {
            Some(Ok(message)) => {
                last_event = Instant::now();
                read.records += 1;
                let size = message.payload_len() + message.key().map_or(0, <[u8]>::len);
                read.bytes += u64::try_from(size).unwrap_or(u64::MAX);
                let ours = index_of_key(message.key(), run_id).is_some();
                let tagged = target.tags.as_ref().is_none_or(|tags| {
                    let mut found = message.headers().into_iter().flat_map(|h| h.iter());
                    found.any(|h| h.key == TAG_HEADER && h.value.is_some_and(|v| tags.contains(v)))
                });
                if !ours || !tagged {
                    read.wrong += 1;
                }
            }
            Some(Err(KafkaError::PartitionEOF(partition))) => {
                last_event = Instant::now();
                ended.insert(partition);
            }
            Some(Err(err)) => {
                read.errors += 1;
                read.last_error = Some(err.to_string());
            }
            None => {}
        }
    }
    read.elapsed_s = started.elapsed().as_secs_f64();
    if let (Some(before), Some(pid)) = (before, args.broker_pid) {
        let after = proc_counters(pid)?;
        read.disk_read_bytes = Some(after.read_bytes.saturating_sub(before.read_bytes));
        read.broker_cpu_s = Some(after.cpu_s - before.cpu_s);
    }
    drop(consumer);
    Ok(read)
}

/// The median of `values` (the upper one of an even count); 0 when empty.
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

/// One topic's reads over the rounds, and their medians.
#[derive(Debug, Clone, Serialize)]
struct TargetReport {
    topic: String,
    /// The view's tag expression; `None` for the source.
    tags: Option<String>,
    expected_records: u64,
    elapsed_s: f64,
    records_per_s: f64,
    /// The source's record count over the median time: how fast the read
    /// went through the source.
    source_records_per_s: f64,
    disk_read_bytes: Option<f64>,
    /// Disk reads as a share of the source's in the same round (median).
    disk_read_share: Option<f64>,
    broker_cpu_s: Option<f64>,
    reads: Vec<Read>,
}

#[derive(Debug, Clone, Serialize)]
struct ViewReport {
    mode: &'static str,
    brokers: String,
    topic: String,
    partitions: i32,
    count: u64,
    size: usize,
    compression: &'static str,
    linger_ms: u32,
    run_length: u64,
    rounds: u32,
    drop_caches: bool,
    produced: u64,
    produce_failed: u64,
    produce_elapsed_s: f64,
    targets: Vec<TargetReport>,
    /// Every record produced, every view exact, every read to its end.
    ok: bool,
}

impl ViewReport {
    fn text(&self) -> String {
        let mut text = format!(
            "view: {} records of {} bytes ({}, runs of {}) in {} partitions of {}, \
             {} rounds{}\n  produced    {} in {:.1} s, {} failed\n",
            self.count,
            self.size,
            self.compression,
            self.run_length,
            self.partitions,
            self.topic,
            self.rounds,
            if self.drop_caches {
                ", page cache dropped before each read"
            } else {
                ""
            },
            self.produced,
            self.produce_elapsed_s,
            self.produce_failed,
        );
        for t in &self.targets {
            text.push_str(&format!(
                "  {:<12} {} records in {:.2} s: {:.0} records/s, source scanned at {:.0} records/s",
                t.topic, t.expected_records, t.elapsed_s, t.records_per_s, t.source_records_per_s
            ));
            if let (Some(bytes), Some(cpu)) = (t.disk_read_bytes, t.broker_cpu_s) {
                text.push_str(&format!(
                    "; broker read {:.1} MB from disk ({:.1} % of the source's), {:.2} CPU s",
                    bytes / 1e6,
                    t.disk_read_share.unwrap_or(f64::NAN) * 100.0,
                    cpu
                ));
            }
            text.push('\n');
            for read in t.reads.iter().filter(|r| r.errors > 0 || r.wrong > 0) {
                text.push_str(&format!(
                    "    a read gave {} records ({} wrong), {} errors: {}\n",
                    read.records,
                    read.wrong,
                    read.errors,
                    read.last_error.as_deref().unwrap_or("-")
                ));
            }
        }
        text
    }
}

/// Runs `weir bench view` and prints its report. Fails (exit code 1) after
/// printing when a record failed or a read was wrong or stalled.
pub(super) fn run(args: &ViewArgs) -> anyhow::Result<()> {
    let common = args.common(&args.topic);
    let source = client::prepare_topic(&common, Missing::Create)?;
    ensure_empty(&common, source.partitions)?;
    // The views exist before the records come, as a user would have them:
    // the broker keeps the batches' tag summaries only while a view reads
    // the partition, and a batch written before may match anything.
    let mut targets = vec![Target {
        name: args.topic.clone(),
        expected: 0,
        tags: None,
    }];
    let mut expressions = vec![None];
    for (suffix, tags) in VIEWS {
        let name = format!("{}-{suffix}", args.topic);
        let expression = tag_expression(tags);
        client::prepare_topic_with(
            &common,
            &name,
            source.partitions,
            &[
                ("weir.view.source", &args.topic),
                ("weir.view.tags", &expression),
            ],
        )?;
        targets.push(Target {
            name,
            expected: (0..args.count)
                .filter(|&i| tag_of(i, args.run_length) < tags)
                .count() as u64,
            tags: Some((0..tags).map(|t| tag_name(t).into_bytes()).collect()),
        });
        expressions.push(Some(expression));
    }

    let clock = Clock::start();
    let producer = send::create_producer(&common, args.compression, args.linger_ms, clock)?;
    let value = super::produce::filler(args.size);
    let run_id = send::run_id();
    let begin_us = clock.now_us();
    std::thread::scope(|scope| {
        let producing = scope.spawn(|| {
            send::send_all(
                &producer,
                &args.topic,
                run_id,
                args.count,
                &value,
                |index| {
                    let tag = tag_name(tag_of(index, args.run_length));
                    send::Planned {
                        partition: partition_of(index, args.run_length, source.partitions),
                        headers: OwnedHeaders::new_with_capacity(1).insert(Header {
                            key: TAG_HEADER,
                            value: Some(tag.as_bytes()),
                        }),
                    }
                },
            );
        });
        Progress::new(&common, "produce")
            .follow(&producer.context().delivered, || producing.is_finished());
        producing
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
    });
    let sent = producer.context();
    let produced = sent.delivered.load(Ordering::SeqCst);
    let produce_failed = sent.failed.load(Ordering::SeqCst);
    let produce_elapsed_s = sent
        .last_delivery_us
        .load(Ordering::SeqCst)
        .saturating_sub(begin_us) as f64
        / 1e6;
    let produce_last_error = sent.diagnostics.last_error();
    drop(producer);
    if let Some(source) = targets.first_mut() {
        source.expected = produced;
    }
    if produce_failed > 0 {
        bail!(
            "{produce_failed} of {} records failed ({}); the views cannot be checked",
            args.count,
            produce_last_error.unwrap_or_default()
        );
    }

    let mut reads: Vec<Vec<Read>> = vec![Vec::new(); targets.len()];
    for round in 0..args.rounds {
        for (target, reads) in targets.iter().zip(&mut reads) {
            if !args.json {
                eprintln!(
                    "round {} of {}: reading {}",
                    round + 1,
                    args.rounds,
                    target.name
                );
            }
            reads.push(read_to_end(args, target, source.partitions, run_id)?);
        }
    }

    let source_reads = reads.first().cloned().unwrap_or_default();
    let mut ok = true;
    let mut reports = Vec::new();
    for ((target, reads), tags) in targets.iter().zip(reads).zip(expressions) {
        ok &= reads
            .iter()
            .all(|r| r.errors == 0 && r.wrong == 0 && r.records == target.expected);
        let elapsed_s = median(reads.iter().map(|r| r.elapsed_s).collect());
        let per_s = |records: u64| match elapsed_s > 0.0 {
            true => records as f64 / elapsed_s,
            false => 0.0,
        };
        let disk: Option<Vec<f64>> = reads
            .iter()
            .map(|r| r.disk_read_bytes.map(|b| b as f64))
            .collect();
        let share: Option<Vec<f64>> = reads
            .iter()
            .zip(&source_reads)
            .map(|(r, s)| match (r.disk_read_bytes, s.disk_read_bytes) {
                (Some(r), Some(s)) if s > 0 => Some(r as f64 / s as f64),
                _ => None,
            })
            .collect();
        let cpu: Option<Vec<f64>> = reads.iter().map(|r| r.broker_cpu_s).collect();
        reports.push(TargetReport {
            topic: target.name.clone(),
            tags,
            expected_records: target.expected,
            elapsed_s,
            records_per_s: per_s(target.expected),
            source_records_per_s: per_s(produced),
            disk_read_bytes: disk.map(median),
            disk_read_share: share.map(median),
            broker_cpu_s: cpu.map(median),
            reads,
        });
    }
    let report = ViewReport {
        mode: "view",
        brokers: args.brokers.clone(),
        topic: args.topic.clone(),
        partitions: source.partitions,
        count: args.count,
        size: args.size,
        compression: args.compression.as_config(),
        linger_ms: args.linger_ms,
        run_length: args.run_length,
        rounds: args.rounds,
        drop_caches: args.drop_caches,
        produced,
        produce_failed,
        produce_elapsed_s,
        targets: reports,
        ok,
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", report.text());
    }
    if !ok {
        bail!("a view gave records it should not, missed some, or a read stalled (see the report)");
    }
    Ok(())
}

/// Fails when the source already holds records: the views' expected
/// records are this run's alone.
fn ensure_empty(common: &CommonArgs, partitions: i32) -> anyhow::Result<()> {
    let consumer = consume::create_consumer(common, "weir-bench-view", [])?;
    for partition in 0..partitions {
        let (_, high) = consumer
            .fetch_watermarks(&common.topic, partition, Duration::from_secs(10))
            .with_context(|| format!("cannot read the end of {}/{partition}", common.topic))?;
        if high > 0 {
            bail!(
                "topic {} already holds records (partition {partition} ends at {high}); \
                 give --topic a new name",
                common.topic
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_tag_is_about_one_percent_and_runs_share_tag_and_partition() {
        let count = 1_000_000;
        let one = (0..count).filter(|&i| tag_of(i, 1) == 0).count();
        assert!((9_000..11_000).contains(&one), "{one}");
        let half = (0..count).filter(|&i| tag_of(i, 1) < 50).count();
        assert!((490_000..510_000).contains(&half), "{half}");
        assert!((0..1000).all(|i| tag_of(i, 1000) == tag_of(0, 1000)));
        assert!((0..1000).all(|i| partition_of(i, 1000, 8) == 0));
        assert_eq!(partition_of(1000, 1000, 8), 1);
        assert_eq!(partition_of(8000, 1000, 8), 0);
        assert!((0..count).all(|i| tag_of(i, 7) < TAGS));
    }

    #[test]
    fn the_views_expressions_name_their_tags() {
        assert_eq!(tag_expression(1), "t00");
        assert_eq!(tag_expression(3), "t00 || t01 || t02");
    }

    #[test]
    fn proc_files_give_disk_reads_and_cpu_time() {
        let io = "rchar: 10\nwchar: 5\nsyscr: 1\nsyscw: 1\nread_bytes: 4096\nwrite_bytes: 0\n";
        assert_eq!(parse_io(io), Some(4096));
        assert_eq!(parse_io("rchar: 10\n"), None);
        let stat = "42 (weir (x) y) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 9 0";
        assert_eq!(parse_cpu_s(stat), Some(3.0));
        assert_eq!(parse_cpu_s("42 (weir) S 1"), None);
    }

    #[test]
    fn medians_take_the_middle() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![]), 0.0);
    }
}
