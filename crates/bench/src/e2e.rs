//! `weir bench e2e`: one producer sends at `--rate` while one consumer reads
//! the new records; the latency of each is from its send to its receipt.
//!
//! Both ends run in this process, so each value carries the send time on the
//! run's monotonic clock, in microseconds (finer than the record timestamp's
//! milliseconds and immune to wall-clock steps), behind a random run id so
//! that records of other runs on the same topic are ignored.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher as _, Hasher as _};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use hdrhistogram::Histogram;
use rdkafka::Offset;
use rdkafka::consumer::Consumer as _;
use rdkafka::error::KafkaError;
use rdkafka::message::Message as _;
use rdkafka::producer::Producer as _;

use super::E2eArgs;
use super::client::{self, Missing};
use super::consume::{self, BenchConsumer, POLL_MS};
use super::produce::{self, Payload, SendPlan};
use super::report::{self, Clock, ConfigReport, LatencyMs, Progress, Report};

/// Bytes at the start of each value: run id, then send time.
const STAMP_BYTES: usize = 16;
/// How long finding each partition's end offset may take.
const WATERMARK_TIMEOUT_MS: u64 = 10_000;

/// What the producer thread tells the consumer thread once it is done.
struct SendDone {
    done: AtomicBool,
    /// Records the broker acknowledged, all of which the consumer must see.
    delivered: AtomicU64,
    /// When the last delivery report came in, on the run's clock.
    at_us: AtomicU64,
}

/// The consumer thread's totals.
struct Received {
    records: u64,
    bytes: u64,
    last_us: u64,
    latency_us: Histogram<u64>,
    errors: u64,
    last_error: Option<String>,
}

fn run_id() -> u64 {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    hasher.finish()
}

fn receive_all(
    consumer: &BenchConsumer,
    clock: Clock,
    run_id: u64,
    sender: &SendDone,
    idle_timeout: Duration,
    progress: &AtomicU64,
) -> anyhow::Result<Received> {
    let mut received = Received {
        records: 0,
        bytes: 0,
        last_us: 0,
        latency_us: report::latency_histogram()?,
        errors: 0,
        last_error: None,
    };
    let idle_timeout_us = u64::try_from(idle_timeout.as_micros()).unwrap_or(u64::MAX);
    loop {
        match consumer.poll(Duration::from_millis(POLL_MS)) {
            Some(Ok(message)) => {
                let now_us = clock.now_us();
                let Some(stamp) = message.payload().and_then(|value| value.get(..STAMP_BYTES))
                else {
                    continue;
                };
                let (id, sent) = stamp.split_at(8);
                let read = |bytes: &[u8]| bytes.try_into().map(u64::from_le_bytes).ok();
                if read(id) != Some(run_id) {
                    continue;
                }
                let Some(sent_us) = read(sent) else {
                    continue;
                };
                received
                    .latency_us
                    .saturating_record(now_us.saturating_sub(sent_us));
                received.records += 1;
                received.bytes += u64::try_from(message.payload_len()).unwrap_or(u64::MAX);
                received.last_us = now_us;
                progress.store(received.records, Ordering::Relaxed);
            }
            Some(Err(KafkaError::PartitionEOF(_))) | None => {}
            Some(Err(err)) => {
                received.errors += 1;
                received.last_error = Some(err.to_string());
            }
        }
        if sender.done.load(Ordering::SeqCst) {
            if received.records >= sender.delivered.load(Ordering::SeqCst) {
                break;
            }
            let since_us = received.last_us.max(sender.at_us.load(Ordering::SeqCst));
            if clock.now_us().saturating_sub(since_us) >= idle_timeout_us {
                break;
            }
        }
    }
    Ok(received)
}

/// Runs `weir bench e2e`.
pub(super) fn run(args: &E2eArgs) -> anyhow::Result<Report> {
    let common = &args.common;
    if args.producer.size < STAMP_BYTES {
        bail!("e2e needs --size of at least {STAMP_BYTES} bytes for the send time stamp");
    }
    let topic = client::prepare_topic(common, Missing::Create)?;
    // The consumer starts at each partition's current end, found before the
    // first send, so it sees every record of this run and none older.
    let consumer = consume::create_consumer(common, "weir-bench-e2e", [])?;
    let mut start = Vec::new();
    for partition in 0..topic.partitions {
        let (_, high) = consumer
            .fetch_watermarks(
                &common.topic,
                partition,
                Duration::from_millis(WATERMARK_TIMEOUT_MS),
            )
            .with_context(|| format!("cannot read the end offset of partition {partition}"))?;
        start.push((partition, Offset::Offset(high)));
    }
    drop(consumer);
    let consumer = consume::create_consumer(common, "weir-bench-e2e", start)?;
    let clock = Clock::start();
    let producer = produce::create_producer(
        common,
        &args.producer,
        clock,
        Arc::new(AtomicU64::new(0)),
        None,
    )?;
    let run_id = run_id();
    let sender = SendDone {
        done: AtomicBool::new(false),
        delivered: AtomicU64::new(0),
        at_us: AtomicU64::new(0),
    };
    let progress = AtomicU64::new(0);
    let bar = Progress::new(common, "e2e");
    let deadline = common.duration.map(|d| Instant::now() + d);
    let plan = SendPlan {
        topic: &common.topic,
        partitions: topic.partitions,
        first_partition: 0,
        count: common.count,
        deadline,
        rate: args.producer.rate as f64,
    };
    let begin_us = clock.now_us();
    let received = std::thread::scope(|scope| {
        let producing = scope.spawn(|| {
            let payload = Payload::Stamped {
                value: produce::filler(args.producer.size),
                run_id,
            };
            produce::send_all(&producer, &plan, payload);
            sender
                .delivered
                .store(producer.context().delivered(), Ordering::SeqCst);
            sender.at_us.store(clock.now_us(), Ordering::SeqCst);
            sender.done.store(true, Ordering::SeqCst);
        });
        let consuming = scope.spawn(|| {
            receive_all(
                &consumer,
                clock,
                run_id,
                &sender,
                args.idle_timeout,
                &progress,
            )
        });
        bar.follow(&progress, || consuming.is_finished());
        if let Err(panic) = producing.join() {
            std::panic::resume_unwind(panic);
        }
        consuming.join()
    })
    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))?;
    let sent = produce::totals(std::slice::from_ref(&producer))?;
    let missing = sent.records.saturating_sub(received.records);
    let elapsed = Duration::from_micros(received.last_us.saturating_sub(begin_us));
    let config = ConfigReport::new(common, topic.partitions)
        .with_producers(&args.producer, 1)
        .with_consumers(1);
    let mut report = Report::new("e2e", received.records, received.bytes, elapsed, config);
    report.latency_ms = LatencyMs::from_histogram(&received.latency_us);
    report.errors = sent.failed + missing + received.errors;
    report.last_error = if missing > 0 {
        Some(format!(
            "{missing} acknowledged records were not received within {}",
            humantime::format_duration(args.idle_timeout)
        ))
    } else {
        received.last_error.or(sent.last_error)
    };
    Ok(report)
}
