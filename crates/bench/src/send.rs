//! The producer of the modes whose records each carry a partition, a key
//! and headers of their own (`delay`, `view`): acks=all and idempotent,
//! so a retried send cannot store a record twice, with the counters a run
//! reads for its progress bar and report. Each key holds the run id and
//! the record's index, so a reader can tell this run's records apart.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{
    BaseRecord, DeliveryResult, Producer as _, ProducerContext, ThreadedProducer,
};

use super::client::{self, Diagnostics};
use super::report::Clock;
use super::{CommonArgs, Compression};

/// Bytes of each key: the run id, then the record's index (both u64 LE).
pub(super) const KEY_BYTES: usize = 16;
/// Records the producer may have queued without a delivery report.
const QUEUE_MESSAGES_MAX: u32 = 100_000;
/// How long the producer waits for the last delivery reports: librdkafka's
/// default message.timeout.ms (300 s) plus a margin.
const DELIVERY_WAIT_MS_MAX: u64 = 330_000;
/// How long a sender lets librdkafka drain its queue when it is full.
const QUEUE_FULL_BACKOFF_MS: u64 = 1;

/// The producer's callbacks and counters.
pub(super) struct SendContext {
    clock: Clock,
    /// Records acknowledged.
    pub(super) delivered: AtomicU64,
    /// Records that failed, or had no delivery report in time.
    pub(super) failed: AtomicU64,
    /// When the last acknowledgement came, on the run's clock.
    pub(super) last_delivery_us: AtomicU64,
    pub(super) diagnostics: Diagnostics,
}

impl ClientContext for SendContext {
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

impl ProducerContext for SendContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _opaque: ()) {
        match result {
            Ok(_) => {
                self.delivered.fetch_add(1, Ordering::Relaxed);
                self.last_delivery_us
                    .fetch_max(self.clock.now_us(), Ordering::Relaxed);
            }
            Err((err, _)) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                self.diagnostics.set_last_error(err.to_string());
            }
        }
    }
}

/// The producer of a run.
pub(super) type HeadedProducer = ThreadedProducer<SendContext>;

/// Creates the producer: acks=all, idempotent, with the run's codec and
/// linger.
pub(super) fn create_producer(
    common: &CommonArgs,
    compression: Compression,
    linger_ms: u32,
    clock: Clock,
) -> anyhow::Result<HeadedProducer> {
    let mode = [
        ("acks", "all".to_owned()),
        ("enable.idempotence", "true".to_owned()),
        ("compression.type", compression.as_config().to_owned()),
        ("linger.ms", linger_ms.to_string()),
        (
            "queue.buffering.max.messages",
            QUEUE_MESSAGES_MAX.to_string(),
        ),
    ];
    let context = SendContext {
        clock,
        delivered: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        last_delivery_us: AtomicU64::new(0),
        diagnostics: Diagnostics::new(common),
    };
    client::config(common, &mode)
        .create_with_context(context)
        .context("cannot create the producer (check the -X properties)")
}

/// One record of a run, as the mode plans it; the value is the run's.
pub(super) struct Planned {
    pub(super) partition: i32,
    pub(super) headers: OwnedHeaders,
}

/// Sends records `0..count` of run `run_id` to `topic`, each with `value`
/// and what `plan` gives for its index, then waits for the delivery
/// reports. A record without one in time counts as failed.
pub(super) fn send_all(
    producer: &HeadedProducer,
    topic: &str,
    run_id: u64,
    count: u64,
    value: &[u8],
    plan: impl Fn(u64) -> Planned,
) {
    let context = producer.context();
    for index in 0..count {
        let key = record_key(run_id, index);
        let Planned { partition, headers } = plan(index);
        let mut record = BaseRecord::<[u8], [u8]>::to(topic)
            .partition(partition)
            .key(&key[..])
            .payload(value)
            .headers(headers);
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
                    break;
                }
            }
        }
    }
    if producer
        .flush(Duration::from_millis(DELIVERY_WAIT_MS_MAX))
        .is_err()
    {
        let lost = producer.in_flight_count();
        context
            .failed
            .fetch_add(u64::try_from(lost).unwrap_or(0), Ordering::Relaxed);
        context.diagnostics.set_last_error(format!(
            "{lost} records had no delivery report after {DELIVERY_WAIT_MS_MAX} ms"
        ));
    }
}

/// The key of record `index` of run `run_id`.
pub(super) fn record_key(run_id: u64, index: u64) -> [u8; KEY_BYTES] {
    let mut key = [0; KEY_BYTES];
    let (run, at) = key.split_at_mut(8);
    run.copy_from_slice(&run_id.to_le_bytes());
    at.copy_from_slice(&index.to_le_bytes());
    key
}

/// The record index in a key of run `run_id`; `None` for other keys.
pub(super) fn index_of_key(key: Option<&[u8]>, run_id: u64) -> Option<u64> {
    let key: &[u8; KEY_BYTES] = key?.try_into().ok()?;
    let (run, at) = key.split_at(8);
    let read = |bytes: &[u8]| bytes.try_into().ok().map(u64::from_le_bytes);
    (read(run)? == run_id).then_some(read(at)?)
}

/// A run id for the keys, different for each run.
pub(super) fn run_id() -> u64 {
    use std::hash::{BuildHasher as _, Hasher as _};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_of_this_run_give_their_index_and_others_none() {
        let key = record_key(42, 123_456);
        assert_eq!(index_of_key(Some(&key), 42), Some(123_456));
        assert_eq!(index_of_key(Some(&key), 43), None);
        assert_eq!(index_of_key(Some(&key[..15]), 42), None);
        assert_eq!(index_of_key(None, 42), None);
    }
}
