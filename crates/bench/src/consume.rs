//! `weir bench consume`, and the consumer set-up that `e2e` reuses:
//! partitions are assigned directly (no group membership, nothing
//! committed), and each consumer thread polls librdkafka, which fetches in
//! the background and hands over one record per poll from its prefetch queue.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer as _, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::Message as _;
use rdkafka::{Offset, TopicPartitionList};

use super::client::{self, Diagnostics, Missing};
use super::report::{Clock, ConfigReport, Progress, Report};
use super::{CommonArgs, ConsumeArgs};

/// The longest one poll blocks, which bounds how late a consumer notices the
/// deadline or that another consumer reached the count.
pub(super) const POLL_MS: u64 = 100;

/// A consumer's callbacks: librdkafka's warnings go to stderr.
#[derive(Debug)]
pub(super) struct ConsumeContext {
    diagnostics: Diagnostics,
}

impl ClientContext for ConsumeContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        self.diagnostics.log(level, facility, message);
    }
}

impl ConsumerContext for ConsumeContext {}

/// A librdkafka consumer of the bench.
pub(super) type BenchConsumer = BaseConsumer<ConsumeContext>;

/// Creates a consumer that reads `partitions` of the topic from `offset`.
pub(super) fn create_consumer(
    common: &CommonArgs,
    group_id: &str,
    partitions: impl IntoIterator<Item = (i32, Offset)>,
) -> anyhow::Result<BenchConsumer> {
    // librdkafka's consumer needs a group id even when it only uses
    // `assign`; with offsets neither stored nor committed, the group is
    // never joined and leaves no state on the broker.
    let mode = [
        ("group.id", group_id.to_owned()),
        ("enable.auto.commit", "false".to_owned()),
        ("enable.auto.offset.store", "false".to_owned()),
        ("auto.offset.reset", "earliest".to_owned()),
    ];
    let consumer: BenchConsumer = client::config(common, &mode)
        .create_with_context(ConsumeContext {
            diagnostics: Diagnostics::new(common),
        })
        .context("cannot create the consumer (check the -X properties)")?;
    let mut assignment = TopicPartitionList::new();
    for (partition, offset) in partitions {
        assignment
            .add_partition_offset(&common.topic, partition, offset)
            .context("cannot build the partition assignment")?;
    }
    consumer
        .assign(&assignment)
        .context("cannot assign the partitions")?;
    Ok(consumer)
}

/// State the consumer threads of one run share.
struct Shared {
    clock: Clock,
    count: u64,
    /// Records taken so far; a consumer counts a record only if its claim
    /// is below `count`, so the run reads exactly `count`.
    claimed: AtomicU64,
    last_record_us: AtomicU64,
    stop: AtomicBool,
}

/// One consumer thread's totals.
#[derive(Debug, Default)]
struct Consumed {
    bytes: u64,
    errors: u64,
    last_error: Option<String>,
}

fn consume_all(
    consumer: &BenchConsumer,
    shared: &Shared,
    deadline: Option<Instant>,
    idle_timeout: Duration,
    begin_us: u64,
) -> Consumed {
    let mut consumed = Consumed::default();
    let idle_timeout_us = u64::try_from(idle_timeout.as_micros()).unwrap_or(u64::MAX);
    while !shared.stop.load(Ordering::Relaxed) {
        if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
            shared.stop.store(true, Ordering::Relaxed);
            break;
        }
        match consumer.poll(Duration::from_millis(POLL_MS)) {
            Some(Ok(message)) => {
                let claim = shared.claimed.fetch_add(1, Ordering::Relaxed);
                if claim >= shared.count {
                    break;
                }
                let size = message.payload_len() + message.key().map_or(0, <[u8]>::len);
                consumed.bytes += u64::try_from(size).unwrap_or(u64::MAX);
                shared
                    .last_record_us
                    .fetch_max(shared.clock.now_us(), Ordering::Relaxed);
                if claim + 1 == shared.count {
                    shared.stop.store(true, Ordering::Relaxed);
                    break;
                }
                continue;
            }
            Some(Err(KafkaError::PartitionEOF(_))) | None => {}
            Some(Err(err)) => {
                consumed.errors += 1;
                consumed.last_error = Some(err.to_string());
            }
        }
        let last_us = shared.last_record_us.load(Ordering::Relaxed).max(begin_us);
        if shared.clock.now_us().saturating_sub(last_us) >= idle_timeout_us {
            shared.stop.store(true, Ordering::Relaxed);
        }
    }
    consumed
}

/// Runs `weir bench consume`.
pub(super) fn run(args: &ConsumeArgs) -> anyhow::Result<Report> {
    let common = &args.common;
    let topic = client::prepare_topic(common, Missing::Fail)?;
    let consumer_count = i32::try_from(args.consumers)
        .unwrap_or(i32::MAX)
        .min(topic.partitions);
    if consumer_count < i32::try_from(args.consumers).unwrap_or(i32::MAX) && !common.json {
        eprintln!(
            "note: {} partitions, so only {consumer_count} consumers",
            topic.partitions
        );
    }
    let consumers = (0..consumer_count)
        .map(|index| {
            let partitions = (0..topic.partitions)
                .filter(|partition| partition % consumer_count == index)
                .map(|partition| (partition, Offset::Beginning));
            create_consumer(common, "weir-bench", partitions)
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let shared = Shared {
        clock: Clock::start(),
        count: common.count,
        claimed: AtomicU64::new(0),
        last_record_us: AtomicU64::new(0),
        stop: AtomicBool::new(false),
    };
    let bar = Progress::new(common, "consume");
    let deadline = common.duration.map(|d| Instant::now() + d);
    let begin_us = shared.clock.now_us();
    let results: Vec<Consumed> = std::thread::scope(|scope| {
        let workers: Vec<_> = consumers
            .iter()
            .map(|consumer| {
                let shared = &shared;
                scope.spawn(move || {
                    consume_all(consumer, shared, deadline, args.idle_timeout, begin_us)
                })
            })
            .collect();
        bar.follow(&shared.claimed, || workers.iter().all(|w| w.is_finished()));
        workers
            .into_iter()
            .map(|worker| {
                worker.join().unwrap_or_else(|_| Consumed {
                    bytes: 0,
                    errors: 1,
                    last_error: Some("a consumer thread panicked".to_owned()),
                })
            })
            .collect()
    });
    let records = shared.claimed.load(Ordering::SeqCst).min(common.count);
    let last_us = shared.last_record_us.load(Ordering::SeqCst).max(begin_us);
    let elapsed = Duration::from_micros(last_us - begin_us);
    let bytes = results.iter().map(|r| r.bytes).sum();
    let config = ConfigReport::new(common, topic.partitions).with_consumers(args.consumers);
    let mut report = Report::new("consume", records, bytes, elapsed, config);
    report.errors = results.iter().map(|r| r.errors).sum();
    report.last_error = results.into_iter().rev().find_map(|r| r.last_error);
    Ok(report)
}
