//! Crash safety with a real client: an idempotent producer (acks=all) keeps
//! producing numbered records while the broker is killed with SIGKILL at
//! random points and restarted on the same data folder and port. After each
//! restart, and at the end, every acknowledged record is read back exactly
//! once, and no record, acknowledged or not, appears twice.
//!
//! `WEIR_CRASH_KILLS` (default 20) and `WEIR_CRASH_SEED` change the run; the
//! seed is printed so a failure can be replayed.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use common::{Broker, TrackedProducer};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rdkafka::Message;
use rdkafka::producer::{BaseRecord, Producer};

const PARTITIONS: i32 = 4;
const TOPIC: &str = "crash";
const KILLS_DEFAULT: usize = 20;
const SEED_DEFAULT: u64 = 0x00c0_ffee;
/// Fewest and most records produced in one broker life (bounds the run's size).
const RECORDS_PER_LIFE_MIN: u64 = 500;
const RECORDS_PER_LIFE_MAX: u64 = 4000;
/// Longest random wait between reaching the acknowledgement target and the kill.
const KILL_DELAY_MS_MAX: u64 = 20;
/// How long one broker life may take to acknowledge its share.
const LIFE_TIMEOUT: Duration = Duration::from_secs(90);
/// How long reading everything back may take.
const VERIFY_TIMEOUT: Duration = Duration::from_secs(120);
/// Records librdkafka may hold unsent; bounds memory and the loss window.
const QUEUED_RECORDS_MAX: &str = "2000";

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The payload of record `id`: its number, then filler of varying length so
/// batches, and so torn writes, come in many sizes.
fn payload(id: u64) -> String {
    let filler = "f".repeat(usize::try_from(id % 97).unwrap_or(0));
    format!("{id}:{filler}")
}

fn id_of(message: &rdkafka::message::OwnedMessage) -> Option<u64> {
    let text = std::str::from_utf8(message.payload()?).ok()?;
    text.split(':').next()?.parse().ok()
}

/// What the test knows from delivery reports.
#[derive(Default)]
struct Ledger {
    acked: HashSet<u64>,
    failed: HashMap<u64, String>,
}

impl Ledger {
    fn absorb(&mut self, producer: &TrackedProducer) -> anyhow::Result<()> {
        producer.poll(Duration::ZERO);
        for delivery in producer.context().drain() {
            match delivery.result {
                Ok(_) => {
                    if !self.acked.insert(delivery.id) {
                        bail!("record {} was acknowledged twice", delivery.id);
                    }
                }
                Err(err) => {
                    self.failed.insert(delivery.id, err);
                }
            }
        }
        if let Some((code, reason)) = producer.client().fatal_error() {
            bail!("the idempotent producer hit a fatal error: {code:?}: {reason}");
        }
        Ok(())
    }
}

/// Read the whole topic and check it against the acknowledgements made
/// before the read started.
fn verify(bootstrap: &str, acked: &HashSet<u64>, when: &str) -> anyhow::Result<usize> {
    let partitions: Vec<i32> = (0..PARTITIONS).collect();
    let read = common::read_to_high_watermark(bootstrap, TOPIC, &partitions, VERIFY_TIMEOUT)
        .with_context(|| format!("reading back {when}"))?;
    let mut seen = HashSet::new();
    for (partition, messages) in &read {
        let mut last = None;
        for message in messages {
            let id = id_of(message).with_context(|| {
                format!(
                    "{when}: unreadable record at {partition}/{}",
                    message.offset()
                )
            })?;
            if !seen.insert(id) {
                bail!(
                    "{when}: record {id} appears twice (again at {partition}/{})",
                    message.offset()
                );
            }
            if i64::from(partition % PARTITIONS) != i64::try_from(id % PARTITIONS as u64)? {
                bail!("{when}: record {id} is in partition {partition}");
            }
            if last.is_some_and(|l| l >= id) {
                bail!("{when}: partition {partition} has record {id} after {last:?}");
            }
            last = Some(id);
        }
    }
    let mut lost: Vec<u64> = acked.difference(&seen).copied().collect();
    if !lost.is_empty() {
        lost.sort_unstable();
        bail!(
            "{when}: {} acknowledged records are missing, first ones {:?}",
            lost.len(),
            lost.iter().take(10).collect::<Vec<_>>()
        );
    }
    Ok(seen.len())
}

/// Send records with increasing ids below `send_limit` until told to stop.
fn produce_until_stopped(
    producer: &TrackedProducer,
    next_id: &AtomicU64,
    send_limit: &AtomicU64,
    stop: &AtomicBool,
) -> anyhow::Result<()> {
    while !stop.load(Ordering::SeqCst) {
        let id = next_id.load(Ordering::SeqCst);
        if id >= send_limit.load(Ordering::SeqCst) {
            // This life's budget is spent; serve callbacks until the next one.
            producer.poll(Duration::from_millis(10));
            continue;
        }
        let partition = i32::try_from(id % PARTITIONS as u64)?;
        let value = payload(id);
        let mut record: BaseRecord<'_, [u8], [u8], Box<u64>> =
            BaseRecord::with_opaque_to(TOPIC, Box::new(id))
                .partition(partition)
                .payload(value.as_bytes());
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((
                    rdkafka::error::KafkaError::MessageProduction(
                        rdkafka::types::RDKafkaErrorCode::QueueFull,
                    ),
                    back,
                )) => {
                    if stop.load(Ordering::SeqCst) {
                        return Ok(());
                    }
                    record = back;
                    producer.poll(Duration::from_millis(10));
                }
                Err((err, _)) => bail!("send of record {id} failed: {err}"),
            }
        }
        next_id.store(id + 1, Ordering::SeqCst);
    }
    Ok(())
}

#[test]
fn acknowledged_records_survive_sigkill_exactly_once() -> anyhow::Result<()> {
    let kills: usize = env_or("WEIR_CRASH_KILLS", KILLS_DEFAULT);
    let seed: u64 = env_or("WEIR_CRASH_SEED", SEED_DEFAULT);
    eprintln!("crash test: {kills} kills, WEIR_CRASH_SEED={seed}");
    let mut rng = StdRng::seed_from_u64(seed);

    let port = common::reserve_port()?;
    let mut broker = Broker::start_at(&format!("127.0.0.1:{port}"), &[])?;
    let bootstrap = broker.bootstrap();
    common::create_topic_blocking(&bootstrap, TOPIC, PARTITIONS, &[])?;

    let mut config = common::producer_config(&bootstrap);
    config
        .set("enable.idempotence", "true")
        .set("queue.buffering.max.messages", QUEUED_RECORDS_MAX)
        .set("linger.ms", "1")
        .set("message.timeout.ms", "120000");
    let producer = Arc::new(common::tracked_producer(&config)?);
    let next_id = Arc::new(AtomicU64::new(0));
    let send_limit = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let sender = {
        let (producer, next_id, send_limit, stop) = (
            producer.clone(),
            next_id.clone(),
            send_limit.clone(),
            stop.clone(),
        );
        std::thread::spawn(move || produce_until_stopped(&producer, &next_id, &send_limit, &stop))
    };

    let mut ledger = Ledger::default();
    let result = (|| -> anyhow::Result<()> {
        for kill in 0..kills {
            // Each life gets a budget of new records and is killed once a
            // random part of it is acknowledged, so writes are in flight.
            let budget = rng.random_range(RECORDS_PER_LIFE_MIN..=RECORDS_PER_LIFE_MAX);
            send_limit.store(next_id.load(Ordering::SeqCst) + budget, Ordering::SeqCst);
            let target = ledger.acked.len() as u64 + rng.random_range(1..=budget / 2);
            let deadline = Instant::now() + LIFE_TIMEOUT;
            while (ledger.acked.len() as u64) < target {
                if Instant::now() > deadline || sender.is_finished() {
                    bail!(
                        "life {kill}: {} of {target} acknowledgements after {LIFE_TIMEOUT:?} ({} failed, sender running: {})",
                        ledger.acked.len(),
                        ledger.failed.len(),
                        !sender.is_finished()
                    );
                }
                producer.poll(Duration::from_millis(5));
                ledger.absorb(&producer)?;
            }
            // Acknowledgements arrive in bursts; a random moment after one
            // puts the kill anywhere in the next write and fsync.
            let kill_at =
                Instant::now() + Duration::from_millis(rng.random_range(0..=KILL_DELAY_MS_MAX));
            while Instant::now() < kill_at {
                producer.poll(Duration::from_millis(1));
                ledger.absorb(&producer)?;
            }
            broker.sigkill()?;
            broker.restart()?;
            ledger.absorb(&producer)?;
            let acked_before_read = ledger.acked.clone();
            let stored = verify(
                &bootstrap,
                &acked_before_read,
                &format!("after kill {}", kill + 1),
            )?;
            eprintln!(
                "kill {:>2}: {} acknowledged, {} failed, {stored} stored, {} sent",
                kill + 1,
                acked_before_read.len(),
                ledger.failed.len(),
                next_id.load(Ordering::SeqCst)
            );
        }
        Ok(())
    })();
    stop.store(true, Ordering::SeqCst);
    let sent_result = sender
        .join()
        .map_err(|_| anyhow::anyhow!("the sender thread panicked"))?;
    result?;
    sent_result?;

    // Settle every outstanding record, then check the final log.
    producer
        .flush(Duration::from_secs(150))
        .context("final flush")?;
    ledger.absorb(&producer)?;
    let sent = next_id.load(Ordering::SeqCst);
    let reported = ledger.acked.len() + ledger.failed.len();
    assert_eq!(
        reported as u64, sent,
        "every sent record gets exactly one delivery report"
    );
    let stored = verify(&bootstrap, &ledger.acked, "at the end")?;
    assert!(ledger.acked.len() as u64 > 0, "nothing was acknowledged");

    // A clean shutdown and restart keeps the same log.
    let status = broker.stop()?;
    assert!(status.success(), "SIGTERM shutdown exited with {status}");
    broker.restart()?;
    let after_clean_restart = verify(&bootstrap, &ledger.acked, "after a clean restart")?;
    assert_eq!(
        after_clean_restart, stored,
        "a clean restart changed the log"
    );
    eprintln!(
        "crash test: {} acknowledged, {} failed, {stored} stored of {sent} sent",
        ledger.acked.len(),
        ledger.failed.len()
    );
    Ok(())
}
