//! `weir bench delay`: how late delayed messages arrive, and what keeping
//! them pending costs the broker in memory.
//!
//! Phase 1 produces `--count` records, each with a `weir.delay-ms` header
//! spread over `--min-delay..=--max-delay` by a multiplicative hash of its
//! index, so records come due in an order other than the one they were
//! produced in. Phase 2 reads the copies the broker appends when each is
//! due. The consumer is assigned every partition from its end offset read
//! before phase 1 and runs from the start, so copies that come due while
//! phase 1 still produces are counted too; pending records are never
//! served, so it reads only copies.
//!
//! Each copy carries the original's headers and `weir.produce-time-ms`, so
//! its due time is `weir.produce-time-ms + weir.delay-ms` and needs no
//! state. Lateness is measured twice from it: to the consumer's receipt
//! (wall clock), and to the copy's own timestamp, the broker's delivery
//! time, which leaves the consumer's fetch out. Each key holds the run id
//! and the record's index: copies of other runs are ignored, and a copy
//! seen twice (same original offset) is a duplicate.
//!
//! With `--broker-pid`, the broker's `/proc/PID/status` (VmRSS, RssAnon,
//! Threads) and its open file descriptors are sampled every 500 ms.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use clap::Args;
use hdrhistogram::Histogram;
use rdkafka::consumer::Consumer as _;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Headers as _, Message as _, OwnedHeaders};
use rdkafka::producer::Producer as _;
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;

use super::client::{self, Missing};
use super::consume::{self, BenchConsumer, POLL_MS};
use super::report::{Clock, LatencyMs, Progress, latency_histogram};
use super::send::{self, index_of_key};
use super::{CommonArgs, Compression, PARTITIONS_MAX, parse_property, parse_record_size};

/// The record header asking for delivery this many milliseconds after the
/// record's timestamp (the broker's name for it, `weir-storage`'s
/// `DELAY_MS_HEADER`; the bench measures any broker through librdkafka and
/// does not link the storage crate).
const DELAY_MS_HEADER: &str = "weir.delay-ms";
/// The header the broker sets on a copy: the pending original's offset.
const DELAYED_FROM_HEADER: &str = "weir.delayed-from-offset";
/// The header the broker sets on a copy: the original's timestamp in ms.
const PRODUCE_TIME_HEADER: &str = "weir.produce-time-ms";

/// The most records one run produces; the consumer keeps 8 bytes each.
const RECORDS_MAX: u64 = 10_000_000;
/// The longest `--max-delay`: the run waits that long.
const DELAY_MAX: Duration = Duration::from_secs(24 * 3600);
/// How long finding each partition's end offset may take.
const WATERMARK_TIMEOUT_MS: u64 = 10_000;
/// After the last copy expected, how long the consumer keeps reading, so a
/// duplicate the broker appends a little later (after its next checkpoint,
/// say) is still counted.
const DUPLICATE_WATCH_MS: u64 = 3_000;
/// How often the broker's memory is sampled.
const SAMPLE_EVERY: Duration = Duration::from_millis(500);
/// The most samples kept for the JSON series (a day at two a second).
const SAMPLES_MAX: usize = 200_000;
/// Fibonacci hashing's multiplier, 2^64 / golden ratio: consecutive
/// indexes land far apart, yet evenly over the range.
const SPREAD_MULTIPLIER: u64 = 0x9E37_79B9_7F4A_7C15;
/// Bytes per MiB, the unit of the memory figures.
const BYTES_PER_MIB: f64 = 1024.0 * 1024.0;

pub(super) const DELAY_EXAMPLES: &str = "\
Examples:
  weir bench delay --brokers 127.0.0.1:9092 --broker-pid 12345
  weir bench delay --count 100000 --min-delay 1s --max-delay 5s --json
  weir bench delay --compression lz4 -X linger.ms=20

Phase 1 produces --count records (acks=all, idempotent, --size bytes of
value, round-robin over the partitions), each with a weir.delay-ms header
between --min-delay and --max-delay, spread evenly by a hash of its index so
that due order is not produce order. Phase 2 reads the copies the broker
appends when each is due, from the end offsets read before phase 1, until
every acknowledged record's copy arrived or --grace after the last could be
due. The topic is created with --partitions when missing.

Lateness is measured from each copy's due time (weir.produce-time-ms plus
weir.delay-ms, both on the copy): to its receipt by the consumer, and to the
copy's own timestamp (the broker's delivery time, without the fetch). With
--broker-pid the broker's RSS, threads and open files are sampled every
500 ms: at the start, once every record is pending, at the peak and at the
end.

Exit status: 0 on success; 1 if a record failed, a copy is missing, came
twice, came early by the broker's time or could not be read, or a fetch
failed; 3 if no broker answered within 10 s.";

/// `weir bench delay`.
#[derive(Debug, Clone, Args)]
pub struct DelayArgs {
    /// Bootstrap brokers, comma-separated host:port.
    #[arg(long, env = "WEIR_BROKERS", default_value = "127.0.0.1:9092")]
    brokers: String,
    /// Topic to use.
    #[arg(long, default_value = "bench-delay")]
    topic: String,
    /// Delayed records to produce.
    #[arg(long, default_value_t = 1_000_000,
          value_parser = clap::value_parser!(u64).range(1..=RECORDS_MAX))]
    count: u64,
    /// Partitions to create the topic with when it does not exist (Admin API).
    /// An existing topic keeps its partitions, and all of them are used.
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
    /// The shortest delay a record asks for (e.g. 60s, 500ms).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    min_delay: Duration,
    /// The longest delay a record asks for; delays are spread evenly in between.
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
    max_delay: Duration,
    /// How long after the last record could be due to wait for missing copies.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    grace: Duration,
    /// The broker's process id on this machine: sample its memory, threads
    /// and open files from /proc every 500 ms.
    #[arg(long, value_name = "PID")]
    broker_pid: Option<u32>,
    /// Raw librdkafka property, applied last (repeatable), e.g. -X linger.ms=20.
    #[arg(short = 'X', value_name = "KEY=VALUE", value_parser = parse_property)]
    property: Vec<(String, String)>,
    /// Print one JSON object on stdout instead of the text summary, and no progress bar.
    #[arg(long)]
    json: bool,
}

impl DelayArgs {
    /// The options the shared client set-up and progress bar read.
    fn common(&self) -> CommonArgs {
        CommonArgs {
            brokers: self.brokers.clone(),
            topic: self.topic.clone(),
            count: self.count,
            duration: None,
            partitions: self.partitions,
            replication_factor: self.replication_factor,
            property: self.property.clone(),
            json: self.json,
        }
    }

    fn delay_range_ms(&self) -> anyhow::Result<(u64, u64)> {
        if self.min_delay > self.max_delay {
            bail!(
                "--min-delay ({}) is longer than --max-delay ({})",
                humantime::format_duration(self.min_delay),
                humantime::format_duration(self.max_delay)
            );
        }
        if self.max_delay > DELAY_MAX {
            bail!(
                "--max-delay is at most {}: the run waits that long",
                humantime::format_duration(DELAY_MAX)
            );
        }
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Ok((ms(self.min_delay), ms(self.max_delay)))
    }
}

/// The delay of record `index`, in `min_ms..=max_ms`. The index's Fibonacci
/// hash is a fraction of 2^64 that is equidistributed over consecutive
/// indexes, so the delays are spread evenly and deterministically, but
/// neighbours in produce order get delays far apart.
fn delay_ms(index: u64, min_ms: u64, max_ms: u64) -> u64 {
    debug_assert!(min_ms <= max_ms);
    let span = u128::from(max_ms.saturating_sub(min_ms)) + 1;
    let fraction = u128::from(index.wrapping_mul(SPREAD_MULTIPLIER));
    // fraction / 2^64 * span < span, so the sum stays within max_ms.
    let offset = u64::try_from((fraction * span) >> 64).unwrap_or(0);
    min_ms + offset
}

/// What the broker put on a copy, read from its headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CopyHeaders {
    delay_ms: i64,
    produce_time_ms: i64,
    delayed_from: i64,
}

impl CopyHeaders {
    /// When the original was due: its timestamp plus its delay.
    fn due_ms(&self) -> i64 {
        self.produce_time_ms.saturating_add(self.delay_ms)
    }

    /// Reads the three headers; the first of each key counts (the broker
    /// refuses a delay header set twice, and sets its own once).
    fn parse<'a>(
        headers: impl IntoIterator<Item = (&'a str, Option<&'a [u8]>)>,
    ) -> Result<CopyHeaders, String> {
        let (mut delay, mut produced, mut from) = (None, None, None);
        for (key, value) in headers {
            let slot = match key {
                DELAY_MS_HEADER => &mut delay,
                PRODUCE_TIME_HEADER => &mut produced,
                DELAYED_FROM_HEADER => &mut from,
                _ => continue,
            };
            if slot.is_none() {
                *slot = Some(decimal(key, value)?);
            }
        }
        let missing = |key: &str| format!("a copy has no {key} header");
        Ok(CopyHeaders {
            delay_ms: delay.ok_or_else(|| missing(DELAY_MS_HEADER))?,
            produce_time_ms: produced.ok_or_else(|| missing(PRODUCE_TIME_HEADER))?,
            delayed_from: from.ok_or_else(|| missing(DELAYED_FROM_HEADER))?,
        })
    }
}

fn decimal(key: &str, value: Option<&[u8]>) -> Result<i64, String> {
    value
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("header {key} is not a decimal number: {value:?}"))
}

/// Microseconds from `due_ms` to `at_us` (both since the Unix epoch);
/// negative when `at_us` is before it.
fn lateness_us(due_ms: i64, at_us: i64) -> i64 {
    at_us.saturating_sub(due_ms.saturating_mul(1000))
}

fn wall_clock_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// One copy of this run, as the consumer saw it.
#[derive(Debug, Clone, Copy)]
struct Seen {
    partition: i32,
    index: u64,
    headers: CopyHeaders,
    /// The copy's record timestamp: when the broker delivered it.
    timestamp_ms: i64,
    received_us: i64,
}

/// The consumer's account of the copies of this run.
struct Tally {
    partitions: i32,
    delays_ms: (u64, u64),
    /// Per record index, the original offset of its first copy; -1 before.
    first_from: Vec<i64>,
    copies: u64,
    duplicates: u64,
    /// Copies of a second original of the same index: the producer stored
    /// a record twice (a retry), which is not the broker's duplicate.
    resent: u64,
    /// Copies whose headers, partition or delay are not what was sent.
    malformed: u64,
    /// By the broker's time: delivered before it was due.
    early: u64,
    /// By the consumer's time, received before it was due.
    early_received: u64,
    lateness_us: Histogram<u64>,
    broker_lateness_us: Histogram<u64>,
    last_error: Option<String>,
}

impl Tally {
    fn new(count: u64, partitions: i32, delays_ms: (u64, u64)) -> anyhow::Result<Tally> {
        let slots = usize::try_from(count).context("--count does not fit in memory")?;
        Ok(Tally {
            partitions,
            delays_ms,
            first_from: vec![-1; slots],
            copies: 0,
            duplicates: 0,
            resent: 0,
            malformed: 0,
            early: 0,
            early_received: 0,
            lateness_us: latency_histogram()?,
            broker_lateness_us: latency_histogram()?,
            last_error: None,
        })
    }

    fn malformed(&mut self, error: String) {
        self.malformed += 1;
        self.last_error = Some(error);
    }

    fn record(&mut self, seen: &Seen) {
        let Some(first) = usize::try_from(seen.index)
            .ok()
            .and_then(|i| self.first_from.get_mut(i))
        else {
            self.malformed(format!("a copy has record index {}", seen.index));
            return;
        };
        let partitions = u64::from(self.partitions.unsigned_abs().max(1));
        let (min_ms, max_ms) = self.delays_ms;
        let sent_delay = delay_ms(seen.index, min_ms, max_ms);
        if i64::from(seen.partition) != i64::try_from(seen.index % partitions).unwrap_or(-1)
            || i64::try_from(sent_delay).ok() != Some(seen.headers.delay_ms)
        {
            self.malformed(format!(
                "the copy of record {} came in partition {} with {DELAY_MS_HEADER} {}; \
                 it was sent to partition {} with {sent_delay}",
                seen.index,
                seen.partition,
                seen.headers.delay_ms,
                seen.index % partitions
            ));
            return;
        }
        if *first == seen.headers.delayed_from {
            self.duplicates += 1;
            self.last_error = Some(format!(
                "the original at offset {} of partition {} was delivered twice",
                seen.headers.delayed_from, seen.partition
            ));
            return;
        }
        if *first >= 0 {
            self.resent += 1;
            return;
        }
        *first = seen.headers.delayed_from;
        self.copies += 1;
        let due_ms = seen.headers.due_ms();
        let received = lateness_us(due_ms, seen.received_us);
        let delivered = lateness_us(due_ms, seen.timestamp_ms.saturating_mul(1000));
        if received < 0 {
            self.early_received += 1;
        }
        if delivered < 0 {
            self.early += 1;
        }
        // Early copies count as on time in the percentiles; `early` says how many.
        let as_histogram = |us: i64| u64::try_from(us).unwrap_or(0);
        self.lateness_us.saturating_record(as_histogram(received));
        self.broker_lateness_us
            .saturating_record(as_histogram(delivered));
    }
}

/// What the main thread tells the consumer once phase 1 is over.
struct Phase {
    produced: AtomicBool,
    /// Records the broker acknowledged: each must come back as a copy.
    delivered: AtomicU64,
    /// When the consumer gives up on missing copies, on the run's clock.
    deadline_us: AtomicU64,
    /// Copies received, for the progress bar.
    received: AtomicU64,
}

/// The consumer's totals.
struct Received {
    tally: Tally,
    /// Records of other runs (or without this run's key) read and ignored.
    foreign: u64,
    errors: u64,
    last_error: Option<String>,
    /// When the last new copy came, on the run's clock.
    last_copy_us: u64,
    /// Copies received by the end of phase 1 (records no longer pending).
    copies_by_produced: Option<u64>,
}

fn receive_all(
    consumer: &BenchConsumer,
    clock: Clock,
    run_id: u64,
    phase: &Phase,
    mut tally: Tally,
) -> Received {
    let (mut foreign, mut errors, mut last_error) = (0, 0, None);
    let mut last_copy_us = 0;
    let mut copies_by_produced = None;
    let mut complete_at: Option<Instant> = None;
    loop {
        match consumer.poll(Duration::from_millis(POLL_MS)) {
            Some(Ok(message)) => {
                let received_us = wall_clock_us();
                let Some(index) = index_of_key(message.key(), run_id) else {
                    foreign += 1;
                    continue;
                };
                let headers = message
                    .headers()
                    .map(|h| h.iter().map(|h| (h.key, h.value)).collect::<Vec<_>>())
                    .unwrap_or_default();
                match CopyHeaders::parse(headers) {
                    Ok(headers) => {
                        let before = tally.copies;
                        tally.record(&Seen {
                            partition: message.partition(),
                            index,
                            headers,
                            timestamp_ms: message.timestamp().to_millis().unwrap_or(0),
                            received_us,
                        });
                        if tally.copies > before {
                            last_copy_us = clock.now_us();
                            phase.received.store(tally.copies, Ordering::Relaxed);
                        }
                    }
                    Err(err) => tally.malformed(err),
                }
            }
            Some(Err(KafkaError::PartitionEOF(_))) | None => {}
            Some(Err(err)) => {
                errors += 1;
                last_error = Some(err.to_string());
            }
        }
        if !phase.produced.load(Ordering::SeqCst) {
            continue;
        }
        copies_by_produced.get_or_insert(tally.copies);
        if tally.copies >= phase.delivered.load(Ordering::SeqCst) {
            let since = *complete_at.get_or_insert_with(Instant::now);
            if since.elapsed() >= Duration::from_millis(DUPLICATE_WATCH_MS) {
                break;
            }
        } else if clock.now_us() >= phase.deadline_us.load(Ordering::SeqCst) {
            break;
        }
    }
    Received {
        tally,
        foreign,
        errors,
        last_error,
        last_copy_us,
        copies_by_produced,
    }
}

/// One reading of the broker's process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
struct ProcSample {
    /// Seconds since the run started.
    at_s: f64,
    rss_mib: f64,
    /// Heap and other anonymous memory; the rest of RSS is mapped files.
    rss_anon_mib: Option<f64>,
    threads: Option<u64>,
    /// Open file descriptors; `None` when /proc/PID/fd cannot be read.
    fds: Option<u64>,
}

/// VmRSS, RssAnon and Threads from the text of `/proc/PID/status`; `None`
/// without a VmRSS line (a kernel thread, or not a status file).
fn parse_status(text: &str) -> Option<ProcSample> {
    let mut sample = ProcSample::default();
    let mut rss = None;
    for line in text.lines() {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let number = value.split_whitespace().next().and_then(|n| n.parse().ok());
        let mib = |kib: u64| kib as f64 * 1024.0 / BYTES_PER_MIB;
        match name {
            "VmRSS" => rss = number.map(mib),
            "RssAnon" => sample.rss_anon_mib = number.map(mib),
            "Threads" => sample.threads = number,
            _ => {}
        }
    }
    sample.rss_mib = rss?;
    Some(sample)
}

/// Reads the broker's process now.
fn sample(pid: u32, clock: Clock) -> anyhow::Result<ProcSample> {
    let path = PathBuf::from(format!("/proc/{pid}/status"));
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {} (is --broker-pid running?)", path.display()))?;
    let mut sample =
        parse_status(&text).with_context(|| format!("{} has no VmRSS line", path.display()))?;
    sample.fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()
        .map(|entries| entries.count() as u64);
    sample.at_s = clock.now_us() as f64 / 1e6;
    Ok(sample)
}

/// The broker's process over the run.
#[derive(Debug, Clone, Serialize)]
struct BrokerProcess {
    pid: u32,
    start: ProcSample,
    /// Once phase 1 is over: every record acknowledged and, with a minimum
    /// delay longer than phase 1, all of them still pending.
    after_produce: Option<ProcSample>,
    /// The sample of the highest RSS.
    peak: ProcSample,
    end: Option<ProcSample>,
    /// Every sample, in order (at most [`SAMPLES_MAX`]).
    samples: Vec<ProcSample>,
}

impl BrokerProcess {
    fn add(&mut self, sample: ProcSample) {
        if sample.rss_mib > self.peak.rss_mib {
            self.peak = sample;
        }
        if self.samples.len() < SAMPLES_MAX {
            self.samples.push(sample);
        }
    }
}

/// Samples the broker every [`SAMPLE_EVERY`] until `stop`.
fn watch(pid: u32, clock: Clock, process: &Mutex<BrokerProcess>, stop: &AtomicBool) {
    let mut next = Instant::now();
    while !stop.load(Ordering::SeqCst) {
        // A broker that exited has nothing more to show; the end sample
        // says so.
        if let Ok(sample) = sample(pid, clock) {
            process
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .add(sample);
        }
        next += SAMPLE_EVERY;
        while !stop.load(Ordering::SeqCst) && Instant::now() < next {
            // Short naps so the end of the run is not held up by a sample.
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The outcome. Its JSON field names are a stable interface.
#[derive(Debug, Clone, Serialize)]
struct DelayReport {
    mode: &'static str,
    brokers: String,
    topic: String,
    partitions: i32,
    count: u64,
    size: usize,
    compression: &'static str,
    linger_ms: u32,
    min_delay_ms: u64,
    max_delay_ms: u64,
    /// Records the broker acknowledged.
    produced: u64,
    produce_failed: u64,
    produce_elapsed_s: f64,
    produce_msgs_per_sec: f64,
    /// Records still pending once phase 1 was over (acknowledged, no copy yet).
    pending_after_produce: u64,
    /// Distinct copies received.
    copies: u64,
    /// From the end of phase 1 to the last copy.
    deliver_elapsed_s: f64,
    /// Receipt by the consumer minus due time.
    lateness_ms: Option<LatencyMs>,
    /// The copy's timestamp (the broker's delivery time) minus due time.
    broker_lateness_ms: Option<LatencyMs>,
    /// Copies whose timestamp is before their due time.
    early: u64,
    /// Copies received before their due time by this machine's clock.
    early_received: u64,
    duplicates: u64,
    missing: u64,
    /// Copies of a record the producer stored twice.
    resent: u64,
    malformed: u64,
    /// Records of other runs read and ignored.
    foreign: u64,
    consumer_errors: u64,
    /// The latest error the consumer's polls returned.
    consumer_last_error: Option<String>,
    broker_process: Option<BrokerProcess>,
    properties: BTreeMap<String, String>,
    #[serde(skip)]
    last_error: Option<String>,
}

impl DelayReport {
    fn failures(&self) -> u64 {
        self.produce_failed
            + self.missing
            + self.duplicates
            + self.early
            + self.malformed
            + self.consumer_errors
    }

    fn text(&self) -> String {
        let mut text = format!(
            "weir bench delay: topic {} ({} partitions, {} B values, {} compression, \
             delays {}..{} ms) at {}\n",
            self.topic,
            self.partitions,
            self.size,
            self.compression,
            self.min_delay_ms,
            self.max_delay_ms,
            self.brokers
        );
        text.push_str(&format!(
            "  produce     {} records in {:.3} s, {:.0} msgs/s ({} failed); {} pending after\n",
            self.produced,
            self.produce_elapsed_s,
            self.produce_msgs_per_sec,
            self.produce_failed,
            self.pending_after_produce
        ));
        text.push_str(&format!(
            "  copies      {} received, the last {:.3} s after produce ended\n",
            self.copies, self.deliver_elapsed_s
        ));
        for (what, lateness) in [
            ("due to receipt by the consumer", &self.lateness_ms),
            ("due to the copy's timestamp", &self.broker_lateness_ms),
        ] {
            if let Some(l) = lateness {
                text.push_str(&format!(
                    "  lateness    p50 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms ({what})\n",
                    l.p50, l.p99, l.p999, l.max
                ));
            }
        }
        text.push_str(&format!(
            "  errors      early {} (received early {}), duplicates {}, missing {}, \
             malformed {}, consumer errors {}\n",
            self.early,
            self.early_received,
            self.duplicates,
            self.missing,
            self.malformed,
            self.consumer_errors
        ));
        if let Some(error) = &self.consumer_last_error {
            text.push_str(&format!("  consumer    last error: {error}\n"));
        }
        if self.resent > 0 || self.foreign > 0 {
            text.push_str(&format!(
                "  ignored     {} copies of records the producer sent twice, {} records of other runs\n",
                self.resent, self.foreign
            ));
        }
        if let Some(p) = &self.broker_process {
            let show = |s: Option<&ProcSample>| {
                s.map_or("-".to_owned(), |s| {
                    let mut shown = format!("{:.1} MiB", s.rss_mib);
                    if let Some(anon) = s.rss_anon_mib {
                        shown.push_str(&format!(" ({anon:.1} anon)"));
                    }
                    if let Some(threads) = s.threads {
                        shown.push_str(&format!(", {threads} threads"));
                    }
                    if let Some(fds) = s.fds {
                        shown.push_str(&format!(", {fds} fds"));
                    }
                    shown
                })
            };
            text.push_str(&format!("  broker {}   RSS\n", p.pid));
            for (what, s) in [
                ("start", Some(&p.start)),
                ("all pending", p.after_produce.as_ref()),
                ("peak", Some(&p.peak)),
                ("end", p.end.as_ref()),
            ] {
                text.push_str(&format!("    {what:<12} {}\n", show(s)));
            }
        }
        text
    }
}

/// Each partition's end offset, read before anything is produced.
fn end_offsets(
    common: &CommonArgs,
    consumer: &BenchConsumer,
    partitions: i32,
) -> anyhow::Result<TopicPartitionList> {
    let mut start = TopicPartitionList::new();
    for partition in 0..partitions {
        let (_, high) = consumer
            .fetch_watermarks(
                &common.topic,
                partition,
                Duration::from_millis(WATERMARK_TIMEOUT_MS),
            )
            .with_context(|| format!("cannot read the end offset of partition {partition}"))?;
        start
            .add_partition_offset(&common.topic, partition, Offset::Offset(high))
            .context("cannot build the partition assignment")?;
    }
    Ok(start)
}

/// Runs `weir bench delay` and prints its report. Fails (exit code 1) after
/// printing when a record failed or a copy is missing, twice or early.
pub(super) fn run(args: &DelayArgs) -> anyhow::Result<()> {
    let common = args.common();
    let delays_ms = args.delay_range_ms()?;
    let topic = client::prepare_topic(&common, Missing::Create)?;
    let clock = Clock::start();
    let process = match args.broker_pid {
        Some(pid) => {
            let start = sample(pid, clock)?;
            Some(Mutex::new(BrokerProcess {
                pid,
                start,
                after_produce: None,
                peak: start,
                end: None,
                samples: vec![start],
            }))
        }
        None => None,
    };
    let consumer = consume::create_consumer(&common, "weir-bench-delay", [])?;
    let start = end_offsets(&common, &consumer, topic.partitions)?;
    consumer
        .assign(&start)
        .context("cannot assign the partitions")?;
    let producer = send::create_producer(&common, args.compression, args.linger_ms, clock)?;
    let tally = Tally::new(common.count, topic.partitions, delays_ms)?;
    let value = super::produce::filler(args.size);
    let run_id = send::run_id();
    let phase = Phase {
        produced: AtomicBool::new(false),
        delivered: AtomicU64::new(0),
        deadline_us: AtomicU64::new(u64::MAX),
        received: AtomicU64::new(0),
    };
    let stop_watching = AtomicBool::new(false);
    let begin_us = clock.now_us();
    let mut produced_us = begin_us;
    let partitions = u64::from(topic.partitions.unsigned_abs().max(1));
    let received = std::thread::scope(|scope| {
        if let (Some(process), Some(pid)) = (&process, args.broker_pid) {
            let stop = &stop_watching;
            scope.spawn(move || watch(pid, clock, process, stop));
        }
        let consuming = scope.spawn(|| receive_all(&consumer, clock, run_id, &phase, tally));
        let producing = scope.spawn(|| {
            send::send_all(
                &producer,
                &common.topic,
                run_id,
                common.count,
                &value,
                |index| {
                    let delay = delay_ms(index, delays_ms.0, delays_ms.1).to_string();
                    send::Planned {
                        partition: i32::try_from(index % partitions).unwrap_or(0),
                        headers: OwnedHeaders::new_with_capacity(1).insert(Header {
                            key: DELAY_MS_HEADER,
                            value: Some(delay.as_bytes()),
                        }),
                    }
                },
            );
        });
        Progress::new(&common, "produce")
            .follow(&producer.context().delivered, || producing.is_finished());
        if let Err(panic) = producing.join() {
            std::panic::resume_unwind(panic);
        }
        produced_us = clock.now_us();
        if let (Some(process), Some(pid)) = (&process, args.broker_pid) {
            let after = sample(pid, clock).ok();
            let mut process = process.lock().unwrap_or_else(PoisonError::into_inner);
            process.after_produce = after;
            if let Some(after) = after {
                process.add(after);
            }
        }
        let wait = args.max_delay.saturating_add(args.grace);
        let wait_us = u64::try_from(wait.as_micros()).unwrap_or(u64::MAX);
        phase
            .deadline_us
            .store(produced_us.saturating_add(wait_us), Ordering::SeqCst);
        phase.delivered.store(
            producer.context().delivered.load(Ordering::SeqCst),
            Ordering::SeqCst,
        );
        phase.produced.store(true, Ordering::SeqCst);
        if !common.json {
            eprintln!(
                "waiting up to {} for the copies",
                humantime::format_duration(Duration::from_secs(wait.as_secs()))
            );
        }
        Progress::new(&common, "deliver").follow(&phase.received, || consuming.is_finished());
        let received = consuming
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        if let (Some(process), Some(pid)) = (&process, args.broker_pid) {
            let end = sample(pid, clock).ok();
            let mut process = process.lock().unwrap_or_else(PoisonError::into_inner);
            process.end = end;
            if let Some(end) = end {
                process.add(end);
            }
        }
        stop_watching.store(true, Ordering::SeqCst);
        received
    });
    let sent = producer.context();
    let produced = sent.delivered.load(Ordering::SeqCst);
    let produce_elapsed_s = sent
        .last_delivery_us
        .load(Ordering::SeqCst)
        .saturating_sub(begin_us) as f64
        / 1e6;
    let tally = &received.tally;
    let report = DelayReport {
        mode: "delay",
        brokers: common.brokers.clone(),
        topic: common.topic.clone(),
        partitions: topic.partitions,
        count: common.count,
        size: args.size,
        compression: args.compression.as_config(),
        linger_ms: args.linger_ms,
        min_delay_ms: delays_ms.0,
        max_delay_ms: delays_ms.1,
        produced,
        produce_failed: sent.failed.load(Ordering::SeqCst),
        produce_elapsed_s,
        produce_msgs_per_sec: if produce_elapsed_s > 0.0 {
            produced as f64 / produce_elapsed_s
        } else {
            0.0
        },
        pending_after_produce: produced
            .saturating_sub(received.copies_by_produced.unwrap_or(tally.copies)),
        copies: tally.copies,
        deliver_elapsed_s: received.last_copy_us.saturating_sub(produced_us) as f64 / 1e6,
        lateness_ms: LatencyMs::from_histogram(&tally.lateness_us),
        broker_lateness_ms: LatencyMs::from_histogram(&tally.broker_lateness_us),
        early: tally.early,
        early_received: tally.early_received,
        duplicates: tally.duplicates,
        missing: produced.saturating_sub(tally.copies),
        resent: tally.resent,
        malformed: tally.malformed,
        foreign: received.foreign,
        consumer_errors: received.errors,
        consumer_last_error: received.last_error.clone(),
        broker_process: process.map(|p| p.into_inner().unwrap_or_else(PoisonError::into_inner)),
        properties: common.property.iter().cloned().collect(),
        last_error: tally
            .last_error
            .clone()
            .or(received.last_error.clone())
            .or_else(|| sent.diagnostics.last_error()),
    };
    super::group::print_report(common.json, &report, &report.text())?;
    if report.failures() > 0 {
        let mut problems = Vec::new();
        for (n, what) in [
            (report.produce_failed, "records not acknowledged"),
            (report.missing, "acknowledged records without a copy"),
            (report.duplicates, "duplicate copies"),
            (report.early, "copies delivered early"),
            (report.malformed, "unreadable copies"),
            (report.consumer_errors, "fetch errors"),
        ] {
            if n > 0 {
                problems.push(format!("{n} {what}"));
            }
        }
        let detail = report.last_error.as_deref().unwrap_or("no detail");
        bail!(
            "{} (waited up to {} after the end of produce; last error: {detail})",
            problems.join(", "),
            humantime::format_duration(args.max_delay.saturating_add(args.grace))
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(flatten)]
        delay: DelayArgs,
    }

    #[test]
    fn defaults_are_the_issue_figures_and_bad_ranges_are_refused() {
        use clap::Parser as _;
        let cli = Cli::try_parse_from(["delay", "--broker-pid", "7"]);
        let Ok(Cli { delay: args }) = cli else {
            panic!("did not parse: {cli:?}");
        };
        assert_eq!(
            (args.count, args.partitions, args.size),
            (1_000_000, 8, 100)
        );
        assert_eq!(args.topic, "bench-delay");
        assert_eq!(args.broker_pid, Some(7));
        assert_eq!(args.delay_range_ms().ok(), Some((60_000, 120_000)));
        let cli = Cli::try_parse_from(["delay", "--min-delay", "5s", "--max-delay", "1s"]);
        assert!(cli.is_ok_and(|cli| cli.delay.delay_range_ms().is_err()));
        let cli = Cli::try_parse_from(["delay", "--max-delay", "2days"]);
        assert!(cli.is_ok_and(|cli| cli.delay.delay_range_ms().is_err()));
        assert!(Cli::try_parse_from(["delay", "--count", "0"]).is_err());
        assert!(Cli::try_parse_from(["delay", "--min-delay", "60"]).is_err());
    }

    #[test]
    fn delays_spread_evenly_over_the_range_in_an_order_other_than_produce_order() {
        let (min_ms, max_ms) = (60_000, 120_000);
        let count = 1_000_000u64;
        let mut buckets = [0u64; 10];
        let mut descents = 0u64;
        let mut previous = 0;
        for index in 0..count {
            let delay = delay_ms(index, min_ms, max_ms);
            assert!((min_ms..=max_ms).contains(&delay), "{index}: {delay}");
            buckets[((delay - min_ms) * 10 / (max_ms - min_ms + 1)) as usize] += 1;
            descents += u64::from(delay < previous);
            previous = delay;
        }
        for bucket in buckets {
            // Within 1 % of a tenth each.
            assert!(bucket.abs_diff(count / 10) < count / 1000, "{buckets:?}");
        }
        // Neighbours in produce order are not due in that order.
        assert!(descents > count / 3, "{descents}");
    }

    #[test]
    fn delays_reach_both_ends_and_a_single_value_range_stays_put() {
        let delays: Vec<u64> = (0..10_000).map(|i| delay_ms(i, 1000, 1004)).collect();
        assert_eq!(delays.iter().min(), Some(&1000));
        assert_eq!(delays.iter().max(), Some(&1004));
        assert!((0..100).all(|i| delay_ms(i, 7, 7) == 7));
        assert!(delay_ms(u64::MAX, 0, u64::MAX - 1) < u64::MAX);
    }

    fn copy_headers(delay: &str) -> Vec<(&'static str, Option<&[u8]>)> {
        vec![
            ("weir.tag", Some(b"VIP".as_slice())),
            (DELAY_MS_HEADER, Some(delay.as_bytes())),
            (DELAYED_FROM_HEADER, Some(b"17".as_slice())),
            (PRODUCE_TIME_HEADER, Some(b"1700000000000".as_slice())),
        ]
    }

    #[test]
    fn due_time_is_the_produce_time_plus_the_delay_from_the_copy_headers() {
        let parsed = CopyHeaders::parse(copy_headers("60000"));
        assert_eq!(
            parsed,
            Ok(CopyHeaders {
                delay_ms: 60_000,
                produce_time_ms: 1_700_000_000_000,
                delayed_from: 17,
            })
        );
        let due_ms = parsed.map(|h| h.due_ms()).unwrap_or(0);
        assert_eq!(due_ms, 1_700_000_060_000);
        // Received 12.5 ms after due; delivered (timestamp) 3 ms after; one early.
        assert_eq!(lateness_us(due_ms, 1_700_000_060_012_500), 12_500);
        assert_eq!(lateness_us(due_ms, 1_700_000_060_003 * 1000), 3_000);
        assert_eq!(lateness_us(due_ms, 1_700_000_059_999 * 1000), -1_000);
    }

    #[test]
    fn copy_headers_that_are_missing_or_not_numbers_are_refused() {
        let mut headers = copy_headers("soon");
        assert!(
            CopyHeaders::parse(headers.clone()).is_err_and(|e| e.contains(DELAY_MS_HEADER)),
            "{headers:?}"
        );
        headers.retain(|(key, _)| *key != DELAY_MS_HEADER);
        assert!(CopyHeaders::parse(headers).is_err_and(|e| e.contains("no weir.delay-ms")));
        let mut headers = copy_headers("5");
        headers.retain(|(key, _)| *key != PRODUCE_TIME_HEADER);
        assert!(CopyHeaders::parse(headers).is_err());
        assert!(CopyHeaders::parse([(DELAYED_FROM_HEADER, None)]).is_err());
    }

    fn seen(index: u64, delayed_from: i64, late_ms: i64, partitions: i32) -> Seen {
        let delay = delay_ms(index, 1000, 5000);
        let produce_time_ms = 1_700_000_000_000;
        let due_ms = produce_time_ms + i64::try_from(delay).unwrap_or(0);
        Seen {
            partition: i32::try_from(index % u64::from(partitions.unsigned_abs())).unwrap_or(0),
            index,
            headers: CopyHeaders {
                delay_ms: i64::try_from(delay).unwrap_or(0),
                produce_time_ms,
                delayed_from,
            },
            timestamp_ms: due_ms + late_ms,
            received_us: (due_ms + late_ms + 2) * 1000,
        }
    }

    #[test]
    fn tally_counts_duplicates_early_copies_and_lateness() -> anyhow::Result<()> {
        let mut tally = Tally::new(4, 2, (1000, 5000))?;
        tally.record(&seen(0, 10, 5, 2));
        tally.record(&seen(1, 11, 7, 2));
        tally.record(&seen(2, 12, -3, 2));
        // The same original again: the broker's duplicate.
        tally.record(&seen(1, 11, 9, 2));
        // Another original of index 0: the producer's, not counted.
        tally.record(&seen(0, 20, 5, 2));
        // In the wrong partition.
        let mut wrong = seen(3, 13, 1, 2);
        wrong.partition = 0;
        tally.record(&wrong);
        assert_eq!(
            (
                tally.copies,
                tally.duplicates,
                tally.resent,
                tally.early,
                tally.malformed
            ),
            (3, 1, 1, 1, 1)
        );
        // Missing is what was acknowledged less the distinct copies.
        assert_eq!(4 - tally.copies, 1);
        assert_eq!(tally.broker_lateness_us.max() / 1000, 7);
        assert_eq!(tally.lateness_us.max() / 1000, 9);
        // The early copy counts as on time in the percentiles.
        assert_eq!(tally.broker_lateness_us.min(), 0);
        Ok(())
    }

    #[test]
    fn proc_status_gives_rss_anonymous_memory_and_threads() {
        let status = "\
Name:\tweir
Umask:\t0022
State:\tS (sleeping)
VmPeak:\t 1234567 kB
VmHWM:\t  300000 kB
VmRSS:\t  262144 kB
RssAnon:\t  204800 kB
RssFile:\t   57344 kB
RssShmem:\t       0 kB
Threads:\t17
";
        let sample = parse_status(status);
        assert_eq!(
            sample,
            Some(ProcSample {
                at_s: 0.0,
                rss_mib: 256.0,
                rss_anon_mib: Some(200.0),
                threads: Some(17),
                fds: None,
            })
        );
        assert_eq!(parse_status("Name:\tkthreadd\nThreads:\t1\n"), None);
        assert_eq!(parse_status(""), None);
    }

    #[test]
    fn this_process_can_be_sampled() -> anyhow::Result<()> {
        let sample = sample(std::process::id(), Clock::start())?;
        assert!(sample.rss_mib > 0.0);
        assert!(sample.threads.is_some_and(|t| t >= 1));
        assert!(sample.fds.is_some_and(|f| f >= 3));
        Ok(())
    }
}
