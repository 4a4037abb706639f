//! `weir bench produce`, and the producer that `e2e` reuses: each producer
//! thread owns a librdkafka client, sends with a bounded number of records in
//! flight, and records in its delivery callback each record's latency from
//! send to delivery report.
//!
//! Records have no key. Partitions are chosen round-robin by the sender, one
//! record at a time, so every partition gets the same share whatever
//! librdkafka's partitioner would do with null keys.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use hdrhistogram::Histogram;
use rdkafka::ClientConfig;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{
    BaseRecord, DeliveryResult, Producer as _, ProducerContext, ThreadedProducer,
};

use super::client::{self, Diagnostics, Missing};
use super::report::{self, Clock, ConfigReport, LatencyMs, Progress, Report};
use super::{CommonArgs, ProduceArgs, ProducerArgs};

/// How long a producer waits, after its last send, for the outstanding
/// delivery reports: librdkafka's default message.timeout.ms (300 s) plus a
/// margin, since librdkafka fails each record by then.
const DELIVERY_WAIT_MS_MAX: u64 = 330_000;
/// How long a sender lets librdkafka serve delivery reports when its own
/// queue is full, before trying the record again.
const QUEUE_FULL_BACKOFF_MS: u64 = 1;
/// A paced sender sleeps only when it is this far ahead of its schedule;
/// shorter waits are absorbed by sending slightly early.
const PACING_SLEEP_US_MIN: u64 = 1_000;

/// Caps the records a producer has sent without a delivery report. The sender
/// blocks at the cap and is woken once the window has drained by an eighth,
/// so a full window costs one wake-up per many deliveries, not one each.
#[derive(Debug)]
struct Window {
    in_flight: AtomicU64,
    max: u64,
    resume_at: u64,
    sender_waiting: Mutex<bool>,
    resumed: Condvar,
}

impl Window {
    fn new(max: u64) -> Window {
        let max = max.max(1);
        Window {
            in_flight: AtomicU64::new(0),
            max,
            resume_at: max - 1 - max / 8,
            sender_waiting: Mutex::new(false),
            resumed: Condvar::new(),
        }
    }

    fn acquire(&self) {
        if self.in_flight.load(Ordering::SeqCst) >= self.max {
            let mut waiting = self
                .sender_waiting
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            *waiting = true;
            // Re-checked under the lock: `release` notifies under it too, so
            // a wake-up cannot slip in between this check and the wait.
            while self.in_flight.load(Ordering::SeqCst) >= self.max {
                waiting = self
                    .resumed
                    .wait(waiting)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            *waiting = false;
        }
        self.in_flight.fetch_add(1, Ordering::SeqCst);
    }

    fn release(&self) {
        let before = self.in_flight.fetch_sub(1, Ordering::SeqCst);
        // A waiting sender saw at least `max` in flight and only deliveries
        // lower the count from there, so it passes `resume_at` exactly.
        if before.saturating_sub(1) == self.resume_at {
            let waiting = self
                .sender_waiting
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if *waiting {
                self.resumed.notify_one();
            }
        }
    }

    fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::SeqCst)
    }
}

/// One producer's callbacks and counters. librdkafka calls `delivery` on the
/// producer's polling thread, so the histogram lock is uncontended.
pub(super) struct DeliveryContext {
    clock: Clock,
    window: Window,
    latency_us: Mutex<Histogram<u64>>,
    delivered: AtomicU64,
    failed: AtomicU64,
    last_delivery_us: AtomicU64,
    /// Delivered records of every producer of the run, for the progress bar.
    progress: Arc<AtomicU64>,
    /// `--deliveries`: where each acknowledgement is written as it comes.
    deliveries: Option<Arc<DeliveryLog>>,
    diagnostics: Diagnostics,
}

impl ClientContext for DeliveryContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        self.diagnostics.log(level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.diagnostics.log(
            RDKafkaLogLevel::Error,
            "error",
            &format!("{error}: {reason}"),
        );
    }
}

impl ProducerContext for DeliveryContext {
    /// The send time, in microseconds on the run's clock.
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, sent_us: usize) {
        let now_us = self.clock.now_us();
        match result {
            Ok(_) => {
                let sent_us = u64::try_from(sent_us).unwrap_or(u64::MAX);
                self.latency_us
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .saturating_record(now_us.saturating_sub(sent_us));
                self.delivered.fetch_add(1, Ordering::Relaxed);
                self.progress.fetch_add(1, Ordering::Relaxed);
                self.last_delivery_us.fetch_max(now_us, Ordering::Relaxed);
                if let Some(log) = &self.deliveries {
                    log.write(now_us.saturating_sub(sent_us), &self.diagnostics);
                }
            }
            Err((err, _)) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                self.diagnostics.set_last_error(err.to_string());
            }
        }
        self.window.release();
    }
}

impl DeliveryContext {
    /// Records the broker acknowledged so far.
    pub(super) fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::SeqCst)
    }
}

/// `--deliveries`: a line per acknowledged record, "sent_ms acked_ms" in
/// Unix milliseconds, written through at once so a script can follow it.
pub(super) struct DeliveryLog {
    file: Mutex<std::io::LineWriter<std::fs::File>>,
}

impl DeliveryLog {
    pub(super) fn create(path: &std::path::Path) -> anyhow::Result<Self> {
        let file = std::fs::File::create(path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        Ok(Self {
            file: Mutex::new(std::io::LineWriter::new(file)),
        })
    }

    /// A record acknowledged just now, `latency_us` after it was sent.
    fn write(&self, latency_us: u64, diagnostics: &Diagnostics) {
        use std::io::Write;
        let acked_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let sent_ms = acked_ms.saturating_sub(latency_us / 1000);
        let mut file = self.file.lock().unwrap_or_else(PoisonError::into_inner);
        if let Err(e) = writeln!(file, "{sent_ms} {acked_ms}") {
            diagnostics.set_last_error(format!("cannot write --deliveries: {e}"));
        }
    }
}

/// A librdkafka producer with its own polling thread.
pub(super) type BenchProducer = ThreadedProducer<DeliveryContext>;

/// Creates one producer for a run.
pub(super) fn create_producer(
    common: &CommonArgs,
    args: &ProducerArgs,
    clock: Clock,
    progress: Arc<AtomicU64>,
    deliveries: Option<Arc<DeliveryLog>>,
) -> anyhow::Result<BenchProducer> {
    let max_in_flight = u64::from(args.max_in_flight);
    // librdkafka frees a record only after its delivery callback returned,
    // so its own cap gets headroom above the window's.
    let queue_messages_max = u64::from(args.max_in_flight)
        .saturating_mul(2)
        .min(i32::MAX as u64);
    let mode = [
        ("acks", args.acks.as_config().to_owned()),
        ("compression.type", args.compression.as_config().to_owned()),
        ("linger.ms", args.linger_ms.to_string()),
        ("batch.size", args.batch_size.to_string()),
        (
            "queue.buffering.max.messages",
            queue_messages_max.to_string(),
        ),
    ];
    let config: ClientConfig = client::config(common, &mode);
    let context = DeliveryContext {
        clock,
        window: Window::new(max_in_flight),
        latency_us: Mutex::new(report::latency_histogram()?),
        delivered: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        last_delivery_us: AtomicU64::new(0),
        progress,
        deliveries,
        diagnostics: Diagnostics::new(common),
    };
    config
        .create_with_context(context)
        .context("cannot create the producer (check the -X properties)")
}

/// What one sender does.
#[derive(Debug, Clone, Copy)]
pub(super) struct SendPlan<'a> {
    pub(super) topic: &'a str,
    pub(super) partitions: i32,
    /// Where this sender's round-robin starts, so that several senders do
    /// not move over the partitions in step.
    pub(super) first_partition: i32,
    pub(super) count: u64,
    pub(super) deadline: Option<Instant>,
    /// Records per second; 0 means as fast as the window allows.
    pub(super) rate: f64,
}

/// The value of every record a sender sends.
pub(super) enum Payload<'a> {
    /// The same bytes each time.
    Fixed(&'a [u8]),
    /// Bytes whose first 16 are overwritten before each send with the run id
    /// and the send time in microseconds (both little-endian u64).
    Stamped { value: Vec<u8>, run_id: u64 },
}

/// The value bytes a run sends: pseudo-random, so that compression gains
/// nothing a real payload would not give it either.
pub(super) fn filler(size: usize) -> Vec<u8> {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut value = Vec::with_capacity(size);
    while value.len() < size {
        // xorshift64: cheap, and good enough to defeat a compressor.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let take = (size - value.len()).min(8);
        value.extend_from_slice(state.to_le_bytes().get(..take).unwrap_or_default());
    }
    value
}

/// Sends `plan.count` records (or until the deadline), then waits for their
/// delivery reports. Returns how many records were sent.
pub(super) fn send_all(
    producer: &BenchProducer,
    plan: &SendPlan<'_>,
    mut payload: Payload<'_>,
) -> u64 {
    let context = producer.context();
    let started = Instant::now();
    let partitions = i64::from(plan.partitions.max(1));
    let mut sent = 0;
    for seq in 0..plan.count {
        // The clock is read only when a deadline or a rate needs it.
        if plan.deadline.is_some() || plan.rate > 0.0 {
            let mut now = Instant::now();
            if plan.deadline.is_some_and(|deadline| now >= deadline) {
                break;
            }
            if plan.rate > 0.0 {
                let due = started + Duration::from_secs_f64(seq as f64 / plan.rate);
                let due = plan.deadline.map_or(due, |deadline| due.min(deadline));
                if due > now + Duration::from_micros(PACING_SLEEP_US_MIN) {
                    // Pacing, not synchronisation: the schedule says wait.
                    std::thread::sleep(due - now);
                    now = Instant::now();
                    if plan.deadline.is_some_and(|deadline| now >= deadline) {
                        break;
                    }
                }
            }
        }
        context.window.acquire();
        let sent_us = context.clock.now_us();
        let value: &[u8] = match &mut payload {
            Payload::Fixed(value) => value,
            Payload::Stamped { value, run_id } => {
                if let Some(stamp) = value.get_mut(..16) {
                    let (id, time) = stamp.split_at_mut(8);
                    id.copy_from_slice(&run_id.to_le_bytes());
                    time.copy_from_slice(&sent_us.to_le_bytes());
                }
                value
            }
        };
        let partition =
            (i64::from(plan.first_partition) + (seq % partitions as u64) as i64) % partitions;
        let mut record = BaseRecord::<(), [u8], usize>::with_opaque_to(
            plan.topic,
            usize::try_from(sent_us).unwrap_or(usize::MAX),
        )
        .partition(i32::try_from(partition).unwrap_or(0))
        .payload(value);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    producer.poll(Duration::from_millis(QUEUE_FULL_BACKOFF_MS));
                }
                Err((err, _)) => {
                    context.failed.fetch_add(1, Ordering::Relaxed);
                    context.diagnostics.set_last_error(err.to_string());
                    context.window.release();
                    break;
                }
            }
        }
        sent += 1;
    }
    if producer
        .flush(Duration::from_millis(DELIVERY_WAIT_MS_MAX))
        .is_err()
    {
        let lost = context.window.in_flight();
        context.failed.fetch_add(lost, Ordering::Relaxed);
        context.diagnostics.set_last_error(format!(
            "{lost} records had no delivery report after {DELIVERY_WAIT_MS_MAX} ms"
        ));
    }
    sent
}

/// The totals of a run's producers.
pub(super) struct Delivered {
    pub(super) records: u64,
    pub(super) failed: u64,
    pub(super) last_delivery_us: u64,
    pub(super) latency_us: Histogram<u64>,
    pub(super) last_error: Option<String>,
}

pub(super) fn totals(producers: &[BenchProducer]) -> anyhow::Result<Delivered> {
    let mut totals = Delivered {
        records: 0,
        failed: 0,
        last_delivery_us: 0,
        latency_us: report::latency_histogram()?,
        last_error: None,
    };
    for producer in producers {
        let context = producer.context();
        totals.records += context.delivered.load(Ordering::SeqCst);
        totals.failed += context.failed.load(Ordering::SeqCst);
        totals.last_delivery_us = totals
            .last_delivery_us
            .max(context.last_delivery_us.load(Ordering::SeqCst));
        let latency = context
            .latency_us
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        totals
            .latency_us
            .add(&*latency)
            .context("cannot merge latency histograms")?;
        if let Some(err) = context.diagnostics.last_error() {
            totals.last_error = Some(err);
        }
    }
    Ok(totals)
}

/// Runs `weir bench produce`.
pub(super) fn run(args: &ProduceArgs) -> anyhow::Result<Report> {
    let common = &args.common;
    let topic = client::prepare_topic(common, Missing::Create)?;
    let clock = Clock::start();
    let progress = Arc::new(AtomicU64::new(0));
    let deliveries = match &args.deliveries {
        Some(path) => Some(Arc::new(DeliveryLog::create(path)?)),
        None => None,
    };
    let producers = (0..args.producers)
        .map(|_| {
            create_producer(
                common,
                &args.producer,
                clock,
                Arc::clone(&progress),
                deliveries.clone(),
            )
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let value = filler(args.producer.size);
    let bar = Progress::new(common, "produce");
    let deadline = common.duration.map(|d| Instant::now() + d);
    let senders = u64::from(args.producers);
    let begin_us = clock.now_us();
    std::thread::scope(|scope| {
        let workers: Vec<_> = producers
            .iter()
            .zip(0..)
            .map(|(producer, index)| {
                let plan = SendPlan {
                    topic: &common.topic,
                    partitions: topic.partitions,
                    first_partition: i32::try_from(
                        index % u64::from(topic.partitions.unsigned_abs()),
                    )
                    .unwrap_or(0),
                    count: common.count / senders + u64::from(index < common.count % senders),
                    deadline,
                    rate: args.producer.rate as f64 / senders as f64,
                };
                let value = &value;
                scope.spawn(move || send_all(producer, &plan, Payload::Fixed(value)))
            })
            .collect();
        bar.follow(&progress, || workers.iter().all(|w| w.is_finished()));
    });
    let totals = totals(&producers)?;
    let elapsed = Duration::from_micros(totals.last_delivery_us.saturating_sub(begin_us));
    let size = u64::try_from(args.producer.size).unwrap_or(u64::MAX);
    let config =
        ConfigReport::new(common, topic.partitions).with_producers(&args.producer, args.producers);
    let mut report = Report::new(
        "produce",
        totals.records,
        totals.records.saturating_mul(size),
        elapsed,
        config,
    );
    report.latency_ms = LatencyMs::from_histogram(&totals.latency_us);
    report.errors = totals.failed;
    report.last_error = totals.last_error;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_caps_records_in_flight_and_wakes_the_sender() {
        let window = Arc::new(Window::new(8));
        let (acquired, delivered) = std::sync::mpsc::channel::<()>();
        let sender = {
            let window = Arc::clone(&window);
            std::thread::spawn(move || {
                let mut most = 0;
                for _ in 0..10_000 {
                    window.acquire();
                    most = most.max(window.in_flight());
                    if acquired.send(()).is_err() {
                        break;
                    }
                }
                most
            })
        };
        // Plays librdkafka's delivery callback: one release per send.
        for _ in 0..10_000 {
            assert!(delivered.recv().is_ok());
            window.release();
        }
        let most = sender.join().ok();
        assert!(matches!(most, Some(1..=8)), "most in flight: {most:?}");
        assert_eq!(window.in_flight(), 0);
    }

    #[test]
    fn filler_has_the_requested_size_and_is_not_constant() {
        for size in [0, 1, 7, 8, 9, 100, 4096] {
            assert_eq!(filler(size).len(), size);
        }
        let value = filler(100);
        assert!(value.iter().any(|&b| b != value[0]));
    }
}
