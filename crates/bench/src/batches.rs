//! `weir bench batches` and `weir bench lookup`: the memory demo of issue 8.
//!
//! `batches` writes N record batches of one record each over P partitions,
//! as raw Produce requests through weir-client: librdkafka would merge
//! records into large batches, and the broker's index cost is per batch.
//! Each request carries several single-record batches per partition (a
//! partition's `records` may hold many batches), so one fsync covers many.
//! `lookup` then reads from the middle of each partition's retained range,
//! by offset (Fetch) and by time (ListOffsets with the timestamp Fetch
//! returned), and reports both latencies; run it after a restart to measure
//! look-ups on a cold index. The broker's RSS is read by the caller
//! (scripts/bench-scale.sh reads /proc/PID/status).

use std::io::{IsTerminal as _, Write as _};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use bytes::{Bytes, BytesMut};
use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use kafka_protocol::ResponseError;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{
    CreateTopicsRequest, FetchRequest, ProduceRequest, TopicName,
    create_topics_request::CreatableTopic, produce_request,
};
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use rand::Rng as _;
use serde::Serialize;
use weir_client::{Client, Led, str_bytes};

use crate::report::latency_histogram;
use crate::scale::{self, ScaleError};

/// The most batches `--count` may ask for.
const BATCHES_MAX: u64 = 10_000_000_000;
/// The most partitions the demo topic may have.
const PARTITIONS_MAX: i64 = 100_000;
/// The largest record value.
const VALUE_BYTES_MAX: i64 = 1024 * 1024;
/// The most single-record batches per partition in one request.
const BATCHES_PER_PARTITION_MAX: i64 = 10_000;
/// The most connections writing at once.
const WRITERS_MAX: i64 = 64;
/// The most look-ups of each kind one run makes.
const LOOKUPS_MAX: i64 = 10_000_000;
/// How long one request (a produce's fsync, a cold read) may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// How often the progress bar is redrawn.
const PROGRESS_REFRESH: Duration = Duration::from_millis(200);
/// How long `lookup` waits for a restarting broker to answer.
const LOOKUP_CONNECT_TIMEOUT: Duration = Duration::from_secs(300);

pub const BATCHES_EXAMPLES: &str = "\
Examples:
  weir bench batches                                      # 50,000,000 batches over 100 partitions
  weir bench batches --count 100000 --partitions 10 --json
  weir bench batches --duration 10m --size 16

Every batch holds one record of --size bytes stamped with the wall-clock time.
Each writer sends Produce requests (acks=all) holding --per-request batches
for each partition it owns, and waits for the answer before the next. The topic
is created with --partitions partitions when it does not exist. The run ends
at --count batches or after --duration. Afterwards run `weir bench lookup`.

Exit status: 0 on success; 1 if a request failed; 3 if no broker answered
within 10 s.";

pub const LOOKUP_EXAMPLES: &str = "\
Examples:
  weir bench lookup --topic weir-batches --json
  weir bench lookup --lookups 10000

Each look-up picks a partition and an offset in the middle half of its
retained range at random, fetches the batch holding it (Fetch, at most one
batch), then asks ListOffsets for the first offset at that batch's timestamp,
which must not be past the offset fetched. Latencies are per request, median
and p99. It waits up to 5 minutes for a broker that is restarting.

Exit status: 0 on success; 1 if a look-up failed or answered wrongly.";

/// `weir bench batches`.
#[derive(Debug, Clone, Args)]
pub struct BatchesArgs {
    /// Bootstrap brokers, comma-separated host:port (one broker is written to).
    #[arg(long, env = "WEIR_BROKERS", default_value = "127.0.0.1:9092")]
    brokers: String,
    /// Topic to write.
    #[arg(long, default_value = "weir-batches")]
    topic: String,
    /// Batches to write, one record each.
    #[arg(long, default_value_t = 50_000_000,
          value_parser = clap::value_parser!(u64).range(1..=BATCHES_MAX))]
    count: u64,
    /// Partitions of the topic, when this run creates it.
    #[arg(long, default_value_t = 100,
          value_parser = clap::value_parser!(i64).range(1..=PARTITIONS_MAX))]
    partitions: i64,
    /// Bytes of each record's value.
    #[arg(long, value_name = "BYTES", default_value_t = 16,
          value_parser = clap::value_parser!(i64).range(0..=VALUE_BYTES_MAX))]
    size: i64,
    /// Single-record batches per partition in one Produce request.
    #[arg(long, default_value_t = 20,
          value_parser = clap::value_parser!(i64).range(1..=BATCHES_PER_PARTITION_MAX))]
    per_request: i64,
    /// Connections writing at once; the partitions are dealt out between them.
    #[arg(long, default_value_t = 4,
          value_parser = clap::value_parser!(i64).range(1..=WRITERS_MAX))]
    writers: i64,
    /// Stop after this long (e.g. 10m), if --count is not reached first.
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// Print one JSON object on stdout instead of text, and no progress bar.
    #[arg(long)]
    json: bool,
}

/// `weir bench lookup`.
#[derive(Debug, Clone, Args)]
pub struct LookupArgs {
    /// Bootstrap brokers, comma-separated host:port.
    #[arg(long, env = "WEIR_BROKERS", default_value = "127.0.0.1:9092")]
    brokers: String,
    /// Topic to read (written by `weir bench batches`).
    #[arg(long, default_value = "weir-batches")]
    topic: String,
    /// Look-ups of each kind (by offset, by time).
    #[arg(long, default_value_t = 1_000,
          value_parser = clap::value_parser!(i64).range(1..=LOOKUPS_MAX))]
    lookups: i64,
    /// Print one JSON object on stdout instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct BatchesReport {
    mode: &'static str,
    brokers: String,
    topic: String,
    partitions: i64,
    batches: u64,
    bytes: u64,
    elapsed_s: f64,
    batches_per_sec: f64,
}

#[derive(Debug, Serialize)]
struct LookupReport {
    mode: &'static str,
    brokers: String,
    topic: String,
    partitions: usize,
    /// Retained batches over all partitions (log end minus log start).
    retained: i64,
    lookups: i64,
    /// Time until the broker answered Metadata with the topic led.
    ready_ms: f64,
    fetch_ms_p50: f64,
    fetch_ms_p99: f64,
    time_ms_p50: f64,
    time_ms_p99: f64,
}

/// Runs `weir bench batches`.
pub fn run_batches(args: &BatchesArgs) -> anyhow::Result<()> {
    let config = scale::client_config(REQUEST_TIMEOUT);
    let mut client = scale::connect_retrying(&args.brokers, &config, scale::CONNECT_TIMEOUT)?;
    let partitions = ensure_topic(&mut client, &args.topic, args.partitions)?;
    let writers = usize::try_from(args.writers)?.min(partitions.len());
    let written = AtomicU64::new(0);
    let bytes = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let deadline = args.duration.map(|d| Instant::now() + d);
    let bar = progress(args.json, args.count);
    let started = Instant::now();
    let outcome = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..writers)
            .map(|w| {
                let owned: Vec<i32> = partitions
                    .iter()
                    .copied()
                    .skip(w)
                    .step_by(writers)
                    .collect();
                let (written, bytes, stop) = (&written, &bytes, &stop);
                scope.spawn(move || {
                    let result = write_batches(args, &owned, written, bytes, stop, deadline);
                    // One failed writer ends the run for all.
                    stop.store(true, Ordering::SeqCst);
                    result
                })
            })
            .collect();
        while !handles.iter().all(|h| h.is_finished()) {
            let done = written.load(Ordering::Relaxed);
            bar.set_position(done);
            let elapsed = started.elapsed().as_secs_f64();
            if elapsed > 0.0 {
                bar.set_message(format!("{:.0}", done as f64 / elapsed));
            }
            std::thread::sleep(PROGRESS_REFRESH);
        }
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a writer panicked")))
            })
            .collect::<anyhow::Result<Vec<()>>>()
    });
    bar.finish_and_clear();
    outcome?;
    let elapsed_s = started.elapsed().as_secs_f64();
    let batches = written.load(Ordering::SeqCst);
    let report = BatchesReport {
        mode: "batches",
        brokers: args.brokers.clone(),
        topic: args.topic.clone(),
        partitions: i64::try_from(partitions.len())?,
        batches,
        bytes: bytes.load(Ordering::SeqCst),
        elapsed_s,
        batches_per_sec: batches as f64 / elapsed_s.max(f64::MIN_POSITIVE),
    };
    if args.json {
        print_json(&report)
    } else {
        println!(
            "weir bench batches: topic {} ({} partitions) at {}\n  batches     {}\n  bytes       {}\n  elapsed     {:.3} s\n  throughput  {:.0} batches/s",
            report.topic,
            report.partitions,
            report.brokers,
            report.batches,
            report.bytes,
            report.elapsed_s,
            report.batches_per_sec
        );
        Ok(())
    }
}

/// One writer: Produce requests over `owned` partitions until the shared
/// count is reached, the deadline passes, or another writer stopped.
fn write_batches(
    args: &BatchesArgs,
    owned: &[i32],
    written: &AtomicU64,
    bytes: &AtomicU64,
    stop: &AtomicBool,
    deadline: Option<Instant>,
) -> anyhow::Result<()> {
    let config = scale::client_config(REQUEST_TIMEOUT);
    let mut client = scale::connect_retrying(&args.brokers, &config, scale::CONNECT_TIMEOUT)?;
    let value = vec![0x61u8; usize::try_from(args.size)?];
    let per_request = u64::try_from(args.per_request)?;
    let per_partition = usize::try_from(args.per_request)?;
    loop {
        if stop.load(Ordering::SeqCst) || deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(());
        }
        // Claim this request's batches first, so writers never pass --count together.
        let wanted = per_request * owned.len() as u64;
        let before = written.fetch_add(wanted, Ordering::SeqCst);
        let claimed = wanted.min(args.count.saturating_sub(before));
        if claimed < wanted {
            written.fetch_sub(wanted - claimed, Ordering::SeqCst);
        }
        if claimed == 0 {
            return Ok(());
        }
        let mut left = usize::try_from(claimed)?;
        let mut data = Vec::with_capacity(owned.len());
        let mut size = 0u64;
        for &partition in owned {
            let n = left.min(per_partition);
            if n == 0 {
                break;
            }
            left -= n;
            let records = single_record_batches(&value, n)?;
            size += records.len() as u64;
            data.push(
                produce_request::PartitionProduceData::default()
                    .with_index(partition)
                    .with_records(Some(records)),
            );
        }
        let request = ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(i32::try_from(REQUEST_TIMEOUT.as_millis())?)
            .with_topic_data(vec![
                produce_request::TopicProduceData::default()
                    .with_name(TopicName(str_bytes(&args.topic)))
                    .with_partition_data(data),
            ]);
        // v9 is the newest whose request fields are all set here.
        let response = client.send(&request, 9).context("Produce request")?;
        for topic in &response.responses {
            for partition in &topic.partition_responses {
                if let Some(error) = ResponseError::try_from_code(partition.error_code) {
                    return Err(ScaleError::Partition {
                        what: format!("Produce to {}/{}", args.topic, partition.index),
                        error,
                    }
                    .into());
                }
            }
        }
        bytes.fetch_add(size, Ordering::Relaxed);
    }
}

/// `n` record batches, each of one record holding `value`, stamped now.
fn single_record_batches(value: &[u8], n: usize) -> anyhow::Result<Bytes> {
    let timestamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    let record = Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: -1,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: TimestampType::Creation,
        offset: 0,
        sequence: -1,
        timestamp,
        key: None,
        value: Some(Bytes::copy_from_slice(value)),
        headers: Default::default(),
    };
    let options = RecordEncodeOptions {
        version: 2,
        compression: Compression::None,
    };
    let mut buf = BytesMut::new();
    for _ in 0..n {
        RecordBatchEncoder::encode(&mut buf, std::slice::from_ref(&record), &options)
            .context("cannot encode a record batch")?;
    }
    Ok(buf.freeze())
}

/// The topic's partition ids, creating it with `partitions` partitions when
/// it does not exist, once every partition has a leader.
fn ensure_topic(client: &mut Client, topic: &str, partitions: i64) -> anyhow::Result<Vec<i32>> {
    if led_partitions(client, topic)?.is_none() {
        let request = CreateTopicsRequest::default()
            .with_timeout_ms(i32::try_from(REQUEST_TIMEOUT.as_millis())?)
            .with_topics(vec![
                CreatableTopic::default()
                    .with_name(TopicName(str_bytes(topic)))
                    .with_num_partitions(i32::try_from(partitions)?)
                    .with_replication_factor(-1),
            ]);
        let response = client.send_to_controller(&request, 5)?;
        for created in &response.topics {
            if created.error_code != ResponseError::TopicAlreadyExists.code() {
                weir_client::check_message(
                    created.error_code,
                    created.error_message.as_ref(),
                    || format!("cannot create topic {topic}"),
                )?;
            }
        }
    }
    wait_led(client, topic, REQUEST_TIMEOUT)
}

/// Waits until every partition of `topic` has a leader; its partition ids.
fn wait_led(client: &mut Client, topic: &str, timeout: Duration) -> anyhow::Result<Vec<i32>> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(ids) = led_partitions(client, topic)? {
            return Ok(ids);
        }
        if Instant::now() >= deadline {
            return Err(ScaleError::NotReady {
                what: format!("topic {topic}"),
                ready: 0,
                wanted: 1,
                timeout,
            }
            .into());
        }
        // The protocol has no "tell me when ready"; this paces the polls.
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The partition ids of `topic` when it exists and each has a leader.
fn led_partitions(client: &mut Client, topic: &str) -> anyhow::Result<Option<Vec<i32>>> {
    let metadata = client.metadata(Some(&[topic.to_owned()]))?;
    let Some(found) = metadata
        .topics
        .iter()
        .find(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == topic))
    else {
        return Ok(None);
    };
    let led = found.error_code == 0
        && !found.partitions.is_empty()
        && found
            .partitions
            .iter()
            .all(|p| p.error_code == 0 && p.leader_id.0 >= 0);
    let mut ids: Vec<i32> = found.partitions.iter().map(|p| p.partition_index).collect();
    ids.sort_unstable();
    Ok(led.then_some(ids))
}

/// Runs `weir bench lookup`.
pub fn run_lookup(args: &LookupArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let config = scale::client_config(REQUEST_TIMEOUT);
    let mut client = scale::connect_retrying(&args.brokers, &config, LOOKUP_CONNECT_TIMEOUT)?;
    let ids = wait_led(&mut client, &args.topic, LOOKUP_CONNECT_TIMEOUT)?;
    let ready_ms = scale::ms(started.elapsed());
    let metadata = client.metadata(Some(std::slice::from_ref(&args.topic)))?;
    let leader = metadata
        .topics
        .first()
        .and_then(|t| t.partitions.first())
        .map(|p| p.leader_id.0)
        .ok_or_else(|| ScaleError::Unexpected {
            what: format!("Metadata of {}", args.topic),
        })?;
    let led: Vec<Led> = ids
        .iter()
        .map(|&partition| Led {
            topic: args.topic.clone(),
            partition,
            leader,
        })
        .collect();
    let starts = client.list_offsets(&led, weir_client::EARLIEST_TIMESTAMP)?;
    let ends = client.list_offsets(&led, weir_client::LATEST_TIMESTAMP)?;
    // The middle half of each partition's retained range.
    let mut ranges = Vec::new();
    let mut retained = 0;
    for l in &led {
        let key = (l.topic.clone(), l.partition);
        let start = starts.get(&key).copied().flatten().unwrap_or(0);
        let end = ends.get(&key).copied().flatten().unwrap_or(0);
        retained += end - start;
        if end > start {
            let quarter = (end - start) / 4;
            ranges.push((l.clone(), start + quarter, end - quarter));
        }
    }
    if ranges.is_empty() {
        anyhow::bail!(
            "topic {} holds no records; run `weir bench batches` first",
            args.topic
        );
    }
    let mut fetch = latency_histogram()?;
    let mut by_time = latency_histogram()?;
    let mut rng = rand::rng();
    for _ in 0..args.lookups {
        let (l, low, high) = &ranges[rng.random_range(0..ranges.len())];
        let offset = rng.random_range(*low..(*high).max(low + 1));
        let sent = Instant::now();
        let timestamp = fetch_timestamp(&mut client, l, offset)?;
        fetch.saturating_record(micros(sent.elapsed()));
        let sent = Instant::now();
        let found = client.list_offsets(std::slice::from_ref(l), timestamp)?;
        by_time.saturating_record(micros(sent.elapsed()));
        let at = found
            .get(&(l.topic.clone(), l.partition))
            .copied()
            .flatten();
        if at.is_none_or(|at| at > offset) {
            return Err(ScaleError::Unexpected {
                what: format!(
                    "ListOffsets of {}/{} at {timestamp}: {at:?}, past offset {offset} which has that timestamp",
                    l.topic, l.partition
                ),
            }
            .into());
        }
    }
    let q = |h: &hdrhistogram::Histogram<u64>, quantile: f64| {
        h.value_at_quantile(quantile) as f64 / 1000.0
    };
    let report = LookupReport {
        mode: "lookup",
        brokers: args.brokers.clone(),
        topic: args.topic.clone(),
        partitions: led.len(),
        retained,
        lookups: args.lookups,
        ready_ms,
        fetch_ms_p50: q(&fetch, 0.5),
        fetch_ms_p99: q(&fetch, 0.99),
        time_ms_p50: q(&by_time, 0.5),
        time_ms_p99: q(&by_time, 0.99),
    };
    if args.json {
        print_json(&report)
    } else {
        println!(
            "weir bench lookup: topic {} ({} partitions, {} batches retained) at {}\n  ready after      {:.1} ms\n  by offset (Fetch)        p50 {:.3} ms, p99 {:.3} ms\n  by time (ListOffsets)    p50 {:.3} ms, p99 {:.3} ms  ({} each)",
            report.topic,
            report.partitions,
            report.retained,
            report.brokers,
            report.ready_ms,
            report.fetch_ms_p50,
            report.fetch_ms_p99,
            report.time_ms_p50,
            report.time_ms_p99,
            report.lookups
        );
        Ok(())
    }
}

/// Fetches the batch holding `offset` and returns its first record's
/// timestamp.
fn fetch_timestamp(client: &mut Client, l: &Led, offset: i64) -> anyhow::Result<i64> {
    let request = FetchRequest::default()
        .with_max_wait_ms(0)
        .with_min_bytes(1)
        .with_max_bytes(1)
        .with_isolation_level(0)
        .with_session_epoch(-1)
        .with_topics(vec![
            FetchTopic::default()
                .with_topic(TopicName(str_bytes(&l.topic)))
                .with_partitions(vec![
                    FetchPartition::default()
                        .with_partition(l.partition)
                        .with_fetch_offset(offset)
                        .with_partition_max_bytes(1),
                ]),
        ]);
    // v12 is the newest that names topics rather than topic ids.
    let response = client.send_to(l.leader, &request, 12)?;
    let unexpected = || ScaleError::Unexpected {
        what: format!("Fetch of {}/{} at {offset}", l.topic, l.partition),
    };
    let partition = response
        .responses
        .first()
        .and_then(|t| t.partitions.first())
        .ok_or_else(unexpected)?;
    if let Some(error) = ResponseError::try_from_code(partition.error_code) {
        return Err(ScaleError::Partition {
            what: format!("Fetch of {}/{} at {offset}", l.topic, l.partition),
            error,
        }
        .into());
    }
    let mut records = partition.records.clone().ok_or_else(unexpected)?;
    let set = RecordBatchDecoder::decode(&mut records).map_err(|_| unexpected())?;
    let record = set
        .records
        .iter()
        .find(|r| r.offset >= offset)
        .ok_or_else(unexpected)?;
    Ok(record.timestamp)
}

fn micros(elapsed: Duration) -> u64 {
    u64::try_from(elapsed.as_micros())
        .unwrap_or(u64::MAX)
        .max(1)
}

fn print_json<T: Serialize>(report: &T) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, report).context("cannot write the JSON report")?;
    writeln!(out)?;
    Ok(())
}

fn progress(json: bool, total: u64) -> ProgressBar {
    if json || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(
        "writing {bar:40} {human_pos}/{human_len} batches, {msg} batches/s, {elapsed}",
    ) {
        bar.set_style(style);
    }
    bar
}
