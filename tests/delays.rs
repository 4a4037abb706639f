//! Delayed messages (issue 11): a producer sets `weir.delay-ms` or
//! `weir.deliver-at-ms`; the broker acknowledges at once, hides the record,
//! and when it is due appends a copy to the same partition carrying
//! `weir.delayed-from-offset` and `weir.produce-time-ms`. Checked with
//! rdkafka producers and consumers against a real broker: nothing is seen
//! before its time, everything due is delivered once and in due order, a
//! SIGKILL loses and doubles nothing, and bad headers are INVALID_RECORD.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail, ensure};
use common::{Broker, Plain};
use rdkafka::Offset;
use rdkafka::TopicPartitionList;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message, OwnedMessage};
use rdkafka::producer::{BaseRecord, Producer};

const DELAY_MS: &str = "weir.delay-ms";
const DELIVER_AT: &str = "weir.deliver-at-ms";
const DELAYED_FROM: &str = "weir.delayed-from-offset";
const PRODUCE_TIME: &str = "weir.produce-time-ms";
const WAIT: Duration = Duration::from_secs(60);

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The value of the last header `key` of `m`, as text.
fn header(m: &OwnedMessage, key: &str) -> Option<String> {
    m.headers().and_then(|h| {
        h.iter()
            .filter(|h| h.key == key)
            .last()
            .and_then(|h| h.value.map(|v| String::from_utf8_lossy(v).into_owned()))
    })
}

/// A record with `headers` (in order) and `key-i`/`value-i`.
fn record(i: u64, headers: &[(&str, String)]) -> Plain {
    Plain {
        key: Some(format!("key-{i}").into_bytes()),
        value: Some(format!("value-{i}").into_bytes()),
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), Some(v.clone().into_bytes())))
            .collect(),
    }
}

/// Produce `records` to partition 0 of `topic`, one request each, and
/// return each one's delivery result (offset, or the error text).
fn produce(
    bootstrap: &str,
    topic: &str,
    records: &[Plain],
    codec: &str,
) -> anyhow::Result<Vec<Result<i64, String>>> {
    let mut config = common::producer_config(bootstrap);
    config.set("compression.type", codec).set("linger.ms", "0");
    let producer = common::tracked_producer(&config)?;
    for (i, r) in records.iter().enumerate() {
        let mut record = BaseRecord::with_opaque_to(topic, Box::new(i as u64))
            .partition(0)
            .headers(r.owned_headers());
        if let Some(key) = &r.key {
            record = record.key(key.as_slice());
        }
        if let Some(value) = &r.value {
            record = record.payload(value.as_slice());
        }
        common::send_tracked(&producer, record)?;
    }
    producer
        .flush(Duration::from_secs(30))
        .context("flush did not complete")?;
    let mut out: Vec<Result<i64, String>> = vec![Err("no report".into()); records.len()];
    for d in producer.context().drain() {
        if let Some(slot) = out.get_mut(d.id as usize) {
            *slot = d.result.map(|(_, offset)| offset);
        }
    }
    Ok(out)
}

/// A consumer of partition 0 of `topic` from offset 0.
fn consumer(bootstrap: &str, topic: &str) -> anyhow::Result<BaseConsumer> {
    let consumer: BaseConsumer = common::consumer_config(bootstrap).create()?;
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(topic, 0, Offset::Offset(0))?;
    consumer.assign(&assignment)?;
    Ok(consumer)
}

/// Poll `consumer` into `seen` until `done(seen)` or `timeout`.
fn poll_until(
    consumer: &BaseConsumer,
    seen: &mut Vec<OwnedMessage>,
    timeout: Duration,
    done: impl Fn(&[OwnedMessage]) -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while !done(seen) {
        if Instant::now() > deadline {
            let offsets: Vec<i64> = seen.iter().map(Message::offset).collect();
            bail!("timed out after {timeout:?}; read offsets {offsets:?}");
        }
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Err(e)) => bail!("consumer error: {e}"),
            Some(Ok(m)) => seen.push(m.detach()),
        }
    }
    Ok(())
}

/// The delivered copies among `seen`, by the offset they were delayed from.
fn copies(seen: &[OwnedMessage]) -> anyhow::Result<BTreeMap<i64, Vec<&OwnedMessage>>> {
    let mut out: BTreeMap<i64, Vec<&OwnedMessage>> = BTreeMap::new();
    for m in seen {
        if let Some(from) = header(m, DELAYED_FROM) {
            out.entry(from.parse().context("delayed-from")?)
                .or_default()
                .push(m);
        }
    }
    Ok(out)
}

#[test]
fn delayed_records_are_hidden_until_due_then_delivered_once_in_due_order() -> anyhow::Result<()> {
    let broker = Broker::start(&[])?;
    let bootstrap = broker.bootstrap();
    for codec in ["none", "lz4"] {
        let topic = format!("later-{codec}");
        common::create_topic_blocking(&bootstrap, &topic, 1, &[])?;
        let at = now_ms() + 2_000;
        let records = vec![
            record(0, &[("k", "a".into())]),
            record(1, &[(DELAY_MS, "3000".into()), ("k", "b".into())]),
            record(
                2,
                &[
                    ("k", "c".into()),
                    ("k", "c2".into()),
                    (DELAY_MS, "1000".into()),
                ],
            ),
            record(3, &[(DELIVER_AT, at.to_string())]),
            record(4, &[]),
            // Due at once: a time already past.
            record(5, &[(DELIVER_AT, "1".into())]),
        ];
        let produced_at = now_ms();
        let offsets = produce(&bootstrap, &topic, &records, codec)?;
        let offsets: Vec<i64> = offsets
            .into_iter()
            .collect::<Result<_, _>>()
            .map_err(|e| anyhow::anyhow!("a produce failed: {e}"))?;
        ensure!(offsets == [0, 1, 2, 3, 4, 5], "{offsets:?}");

        let consumer = consumer(&bootstrap, &topic)?;
        let mut seen = Vec::new();
        // Everything: the two plain records and four copies.
        poll_until(&consumer, &mut seen, WAIT, |seen| seen.len() >= 6)?;
        let plain: Vec<i64> = seen
            .iter()
            .filter(|m| header(m, DELAYED_FROM).is_none())
            .map(Message::offset)
            .collect();
        ensure!(
            plain == [0, 4],
            "only the plain records at their offsets: {plain:?}"
        );
        let copies = copies(&seen)?;
        ensure!(
            copies.keys().copied().collect::<Vec<_>>() == [1, 2, 3, 5],
            "one copy of each delayed record: {:?}",
            copies.keys()
        );
        // In due order: 5 (past), 2 (1 s), 3 (2 s), 1 (3 s).
        let order: Vec<i64> = seen
            .iter()
            .filter_map(|m| header(m, DELAYED_FROM)?.parse().ok())
            .collect();
        ensure!(order == [5, 2, 3, 1], "due order: {order:?}");
        for (from, copy) in &copies {
            ensure!(
                copy.len() == 1,
                "offset {from} delivered {} times",
                copy.len()
            );
            let copy = copy[0];
            let original = &records[*from as usize];
            let mut want = original.headers.clone();
            let produce_time = header(copy, PRODUCE_TIME).context("produce time")?;
            want.push((DELAYED_FROM.into(), Some(from.to_string().into_bytes())));
            want.push((PRODUCE_TIME.into(), Some(produce_time.clone().into_bytes())));
            let got = Plain::of(copy);
            ensure!(
                got.key == original.key && got.value == original.value && got.headers == want,
                "copy of {from}: {got:?}"
            );
            let produced: i64 = produce_time.parse()?;
            ensure!(
                (produced_at - 5_000..=now_ms()).contains(&produced),
                "produce time {produced}"
            );
            ensure!(copy.offset() > 5, "a copy is appended after the records");
            // Never delivered before its due time (the copy's timestamp is
            // the broker's delivery time).
            let due = match *from {
                1 => produced + 3_000,
                2 => produced + 1_000,
                3 => at,
                _ => 1,
            };
            let delivered = copy.timestamp().to_millis().context("timestamp")?;
            ensure!(
                delivered >= due,
                "offset {from} delivered at {delivered}, due {due}"
            );
        }
        // Nothing more comes: each was delivered once.
        let extra = consumer.poll(Duration::from_millis(1_500));
        ensure!(
            extra.is_none(),
            "an extra record: {:?}",
            extra.map(|m| m.map(|m| m.offset()))
        );
    }
    Ok(())
}

#[test]
fn a_broker_killed_while_moving_delivers_every_delayed_record_exactly_once() -> anyhow::Result<()> {
    const RECORDS: u64 = 400;
    let mut broker = Broker::start(&[])?;
    let topic = "killed";
    common::create_topic_blocking(&broker.bootstrap(), topic, 1, &[])?;
    // Due over 0.5 to 4.5 s, in an order unlike the produce order.
    let records: Vec<Plain> = (0..RECORDS)
        .map(|i| record(i, &[(DELAY_MS, (500 + (i * 7919) % 4_000).to_string())]))
        .collect();
    let produced = produce(&broker.bootstrap(), topic, &records, "zstd")?;
    ensure!(produced.iter().all(Result::is_ok), "{produced:?}");
    // Kill it while records come due, then again.
    std::thread::sleep(Duration::from_millis(1_500));
    broker.sigkill()?;
    broker.restart()?;
    std::thread::sleep(Duration::from_millis(1_000));
    broker.sigkill()?;
    broker.restart()?;

    let consumer = consumer(&broker.bootstrap(), topic)?;
    let mut seen = Vec::new();
    poll_until(&consumer, &mut seen, WAIT, |seen| {
        seen.len() as u64 >= RECORDS
    })?;
    // Let any duplicate show up.
    let _ = poll_until(&consumer, &mut seen, Duration::from_secs(2), |_| false);
    let copies = copies(&seen)?;
    let twice: Vec<_> = copies
        .iter()
        .filter(|(_, c)| c.len() > 1)
        .map(|(f, _)| *f)
        .collect();
    ensure!(twice.is_empty(), "delivered more than once: {twice:?}");
    ensure!(
        copies.keys().copied().eq(0..RECORDS as i64),
        "every delayed record once: {} of {RECORDS}",
        copies.len()
    );
    ensure!(
        seen.len() as u64 == RECORDS,
        "only copies are read: {}",
        seen.len()
    );
    Ok(())
}

#[test]
fn bad_delay_headers_are_invalid_record_and_store_nothing() -> anyhow::Result<()> {
    let broker = Broker::start(&[])?;
    let bootstrap = broker.bootstrap();
    common::create_topic_blocking(&bootstrap, "bounded", 1, &[("weir.delay.max.ms", "10000")])?;
    common::create_topic_blocking(&bootstrap, "compacted", 1, &[("cleanup.policy", "compact")])?;
    common::create_topic_blocking(&bootstrap, "short", 1, &[("retention.ms", "5000")])?;
    let far = (now_ms() + 60_000).to_string();
    let cases: Vec<(&str, Plain, &str)> = vec![
        (
            "bounded",
            record(0, &[(DELAY_MS, "soon".into())]),
            "not a decimal",
        ),
        ("bounded", record(1, &[(DELAY_MS, "-5".into())]), "negative"),
        (
            "bounded",
            record(2, &[(DELAY_MS, " 5".into())]),
            "not a decimal",
        ),
        (
            "bounded",
            record(3, &[(DELAY_MS, "5".into()), (DELIVER_AT, far.clone())]),
            "both",
        ),
        (
            "bounded",
            record(4, &[(DELAY_MS, "20000".into())]),
            "weir.delay.max.ms",
        ),
        (
            "bounded",
            record(5, &[(DELIVER_AT, far.clone())]),
            "weir.delay.max.ms",
        ),
        (
            "bounded",
            record(6, &[(DELAYED_FROM, "3".into())]),
            "broker",
        ),
        (
            "compacted",
            record(7, &[(DELAY_MS, "1000".into())]),
            "compact",
        ),
        // Retention would delete it before it is due.
        (
            "short",
            record(8, &[(DELAY_MS, "10000".into())]),
            "retention.ms",
        ),
    ];
    for (topic, plain, why) in &cases {
        let result = produce(&bootstrap, topic, std::slice::from_ref(plain), "none")?;
        match result.as_slice() {
            [Err(e)] => ensure!(
                e.contains("InvalidRecord") || e.contains("Invalid record"),
                "{why}: {e}"
            ),
            other => bail!("{why}: accepted: {other:?}"),
        }
    }
    // Nothing of them is stored: the next record takes offset 0.
    let ok = produce(
        &bootstrap,
        "bounded",
        &[record(9, &[(DELAY_MS, "10000".into())])],
        "none",
    )?;
    ensure!(matches!(ok.as_slice(), [Ok(0)]), "{ok:?}");
    Ok(())
}
