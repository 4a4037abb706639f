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
    produce_with(bootstrap, topic, records, &[("compression.type", codec)])
}

/// [`produce`] with librdkafka `settings`.
fn produce_with(
    bootstrap: &str,
    topic: &str,
    records: &[Plain],
    settings: &[(&str, &str)],
) -> anyhow::Result<Vec<Result<i64, String>>> {
    let mut config = common::producer_config(bootstrap);
    config.set("linger.ms", "0");
    for (key, value) in settings {
        config.set(*key, *value);
    }
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

#[test]
fn a_hundred_thousand_pending_records_come_due_in_due_order_each_once() -> anyhow::Result<()> {
    const RECORDS: u64 = 100_000;
    const PARTITIONS: i32 = 4;
    let broker = Broker::start(&[])?;
    let bootstrap = broker.bootstrap();
    let topic = "many";
    common::create_topic_blocking(&bootstrap, topic, PARTITIONS, &[])?;
    let mut config = common::producer_config(&bootstrap);
    config
        .set("compression.type", "lz4")
        .set("linger.ms", "20")
        .set("queue.buffering.max.messages", "200000");
    let producer = common::tracked_producer(&config)?;
    for i in 0..RECORDS {
        // Due 3 to 8 s after it was produced, out of produce order.
        let delay = (3_000 + (i * 7_919) % 5_000).to_string();
        let value = i.to_string();
        let headers = rdkafka::message::OwnedHeaders::new().insert(rdkafka::message::Header {
            key: DELAY_MS,
            value: Some(&delay),
        });
        common::send_tracked(
            &producer,
            BaseRecord::with_opaque_to(topic, Box::new(i))
                .partition((i % PARTITIONS as u64) as i32)
                .payload(value.as_bytes())
                .headers(headers),
        )?;
    }
    common::flush_all_delivered(&producer, RECORDS as usize)?;

    let consumer: BaseConsumer = common::consumer_config(&bootstrap).create()?;
    let mut assignment = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        assignment.add_partition_offset(topic, p, Offset::Offset(0))?;
    }
    consumer.assign(&assignment)?;
    let mut seen = Vec::new();
    poll_until(&consumer, &mut seen, WAIT, |seen| {
        seen.len() as u64 >= RECORDS
    })?;
    let _ = poll_until(&consumer, &mut seen, Duration::from_secs(2), |_| false);
    ensure!(
        seen.len() as u64 == RECORDS,
        "{} copies for {RECORDS} records",
        seen.len()
    );
    let mut values = std::collections::BTreeSet::new();
    // Per partition, in offset order: (due, pending offset) never goes back.
    let mut last: BTreeMap<i32, (i64, i64)> = BTreeMap::new();
    for m in &seen {
        let value: u64 = std::str::from_utf8(m.payload().unwrap_or_default())?.parse()?;
        ensure!(values.insert(value), "record {value} delivered twice");
        let from: i64 = header(m, DELAYED_FROM).context("delayed-from")?.parse()?;
        let produced: i64 = header(m, PRODUCE_TIME).context("produce time")?.parse()?;
        let delay: i64 = header(m, DELAY_MS).context("delay")?.parse()?;
        let key = (produced + delay, from);
        let delivered = m.timestamp().to_millis().context("timestamp")?;
        ensure!(
            delivered >= key.0,
            "record {value} delivered at {delivered}, due {}",
            key.0
        );
        if let Some(before) = last.insert(m.partition(), key) {
            ensure!(
                before <= key,
                "partition {}: {key:?} delivered after {before:?}",
                m.partition()
            );
        }
    }
    Ok(())
}

/// A partition's answer to a Produce: its error code and message, and its
/// record errors (batch index, message).
type Answer = (i16, String, Vec<(i32, String)>);

/// A Produce request of one uncompressed record with `headers`, through the
/// raw client: the partition's answer.
fn produce_raw(bootstrap: &str, topic: &str, headers: &[(&str, &str)]) -> anyhow::Result<Answer> {
    use bytes::{Bytes, BytesMut};
    use kafka_protocol::records::{
        Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };
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
        timestamp: now_ms(),
        key: Some(Bytes::from_static(b"k")),
        value: Some(Bytes::from_static(b"v")),
        headers: headers
            .iter()
            .map(|(k, v)| {
                (
                    kafka_protocol::protocol::StrBytes::from_string(k.to_string()),
                    Some(Bytes::copy_from_slice(v.as_bytes())),
                )
            })
            .collect(),
    };
    let mut batch = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut batch,
        &[record],
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )?;
    let mut client = common::raw::RawClient::connect(bootstrap)?;
    let request = common::raw::produce_request(topic, 0, batch.freeze());
    let response: kafka_protocol::messages::ProduceResponse = client.send(&request, 9)?;
    let partition = response
        .responses
        .first()
        .and_then(|t| t.partition_responses.first())
        .context("no partition in the answer")?;
    Ok((
        partition.error_code,
        partition
            .error_message
            .as_ref()
            .map(|m| m.to_string())
            .unwrap_or_default(),
        partition
            .record_errors
            .iter()
            .map(|e| {
                (
                    e.batch_index,
                    e.batch_index_error_message
                        .as_ref()
                        .map(|m| m.to_string())
                        .unwrap_or_default(),
                )
            })
            .collect(),
    ))
}

#[test]
fn a_refused_delay_names_the_record_and_the_header() -> anyhow::Result<()> {
    const INVALID_RECORD: i16 = 87;
    let broker = Broker::start(&[])?;
    common::create_topic_blocking(&broker.bootstrap(), "named", 1, &[])?;
    let (code, message, records) =
        produce_raw(&broker.bootstrap(), "named", &[(DELAY_MS, "3 days")])?;
    ensure!(code == INVALID_RECORD, "{code}: {message}");
    ensure!(
        message.contains("record 0") && message.contains(DELAY_MS),
        "{message}"
    );
    ensure!(
        matches!(records.as_slice(), [(0, why)] if why.contains(DELAY_MS) && why.contains("3 days")),
        "{records:?}"
    );
    let (code, message, _) = produce_raw(&broker.bootstrap(), "named", &[(DELAY_MS, "3000")])?;
    ensure!(code == 0, "{code}: {message}");
    Ok(())
}

#[cfg(feature = "failpoints")]
#[test]
fn a_schedule_that_cannot_be_made_durable_stops_delays_until_a_restart() -> anyhow::Result<()> {
    const KAFKA_STORAGE_ERROR: i16 = 56;
    let mut broker = Broker::start_with_env(
        "127.0.0.1:0",
        &[],
        &[("FAILPOINTS", "storage::timer_checkpoint_sync=return")],
    )?;
    let bootstrap = broker.bootstrap();
    common::create_topic_blocking(&bootstrap, "stuck", 1, &[])?;
    // Accepted until the mover's first checkpoint fails (a second after
    // the start), refused from then on, with the reason.
    let mut accepted = 0;
    let mut refusal = String::new();
    common::wait_until(WAIT, "delayed records to be refused", || {
        let (code, message, _) = produce_raw(&bootstrap, "stuck", &[(DELAY_MS, "500")])?;
        match code {
            0 => accepted += 1,
            KAFKA_STORAGE_ERROR => refusal = message,
            other => bail!("error {other}: {message}"),
        }
        Ok(code == KAFKA_STORAGE_ERROR)
    })?;
    ensure!(refusal.contains("delayed delivery is stopped"), "{refusal}");
    // Everything else is served.
    let (code, message, _) = produce_raw(&bootstrap, "stuck", &[("plain", "yes")])?;
    ensure!(code == 0, "{code}: {message}");
    // Restarted with a working disk, it delivers what it had accepted.
    broker.set_envs(&[]);
    broker.stop()?;
    broker.restart()?;
    let consumer = consumer(&bootstrap, "stuck")?;
    let mut seen = Vec::new();
    poll_until(&consumer, &mut seen, WAIT, |seen| {
        copies(seen).is_ok_and(|c| c.len() >= accepted)
    })?;
    let copies = copies(&seen)?;
    ensure!(
        copies.len() == accepted && copies.values().all(|c| c.len() == 1),
        "{} delivered of {accepted} accepted",
        copies.len()
    );
    let (code, message, _) = produce_raw(&bootstrap, "stuck", &[(DELAY_MS, "500")])?;
    ensure!(code == 0, "delays are taken again: {code}: {message}");
    Ok(())
}

#[cfg(feature = "failpoints")]
#[test]
fn a_due_record_whose_batch_fails_to_read_waits_and_is_delivered_once() -> anyhow::Result<()> {
    const COUNT: usize = 100;
    // A fifth of the reads of stored batches fail: the mover's, its feed's
    // and the consumer's fetches alike.
    let broker = Broker::start_with_env(
        "127.0.0.1:0",
        &[],
        &[("FAILPOINTS", "storage::segment_read=20%return")],
    )?;
    let bootstrap = broker.bootstrap();
    common::create_topic_blocking(&bootstrap, "flaky", 1, &[])?;
    // A batch per record, so each copy needs a read of its own.
    let records: Vec<Plain> = (0..COUNT as u64)
        .map(|i| record(i, &[(DELAY_MS, "1500".to_owned())]))
        .collect();
    let produced = produce_with(
        &bootstrap,
        "flaky",
        &records,
        &[("batch.num.messages", "1")],
    )?;
    let offsets: Vec<i64> = produced
        .into_iter()
        .collect::<Result<_, _>>()
        .map_err(anyhow::Error::msg)?;
    // The consumer's failed fetches are retried; they are not what is tested.
    let consumer = consumer(&bootstrap, "flaky")?;
    let mut seen = Vec::new();
    let deadline = Instant::now() + WAIT;
    while copies(&seen)?.len() < COUNT && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            seen.push(m.detach());
        }
    }
    let copies = copies(&seen)?;
    let missing: Vec<&i64> = offsets.iter().filter(|o| !copies.contains_key(o)).collect();
    ensure!(
        missing.is_empty(),
        "{} of {COUNT} delivered; never delivered: {missing:?}",
        copies.len()
    );
    ensure!(
        copies.len() == COUNT && copies.values().all(|c| c.len() == 1),
        "each record is delivered once: {:?}",
        copies.iter().map(|(o, c)| (o, c.len())).collect::<Vec<_>>()
    );
    Ok(())
}

#[test]
fn copies_due_together_are_split_to_fit_max_message_bytes() -> anyhow::Result<()> {
    let broker = Broker::start(&[])?;
    let bootstrap = broker.bootstrap();
    common::create_topic_blocking(&bootstrap, "tight", 1, &[("max.message.bytes", "2000")])?;
    // Ten records of 1,500 bytes, all due at the same moment: their copies
    // cannot go in one batch.
    let at = (now_ms() + 1_500).to_string();
    let records: Vec<Plain> = (0..10)
        .map(|i| Plain {
            key: None,
            value: Some(vec![b'a' + i as u8; 1_500]),
            headers: vec![(DELIVER_AT.to_string(), Some(at.clone().into_bytes()))],
        })
        .collect();
    let produced = produce_with(
        &bootstrap,
        "tight",
        &records,
        &[("batch.num.messages", "1")],
    )?;
    ensure!(produced.iter().all(Result::is_ok), "{produced:?}");
    let consumer = consumer(&bootstrap, "tight")?;
    let mut seen = Vec::new();
    poll_until(&consumer, &mut seen, WAIT, |seen| seen.len() >= 10)?;
    let copies = copies(&seen)?;
    ensure!(
        copies.keys().copied().eq(0..10) && copies.values().all(|c| c.len() == 1),
        "{:?}",
        copies.keys()
    );
    for (from, copy) in &copies {
        ensure!(Plain::of(copy[0]).value == records[*from as usize].value);
    }
    Ok(())
}

#[test]
fn a_list_reads_at_most_16_mib_of_batches_and_says_it_left_records_out() -> anyhow::Result<()> {
    let broker = Broker::start(&[])?;
    let bootstrap = broker.bootstrap();
    common::create_topic_blocking(&bootstrap, "big", 1, &[])?;
    // Twenty pending records of 900,000 bytes, each in a batch of its own:
    // a list reads each one's whole batch.
    let records: Vec<Plain> = (0..20)
        .map(|i| Plain {
            key: None,
            value: Some(vec![b'a' + i as u8; 900_000]),
            headers: vec![(DELAY_MS.to_string(), Some(b"600000".to_vec()))],
        })
        .collect();
    let produced = produce_with(&bootstrap, "big", &records, &[("batch.num.messages", "1")])?;
    ensure!(produced.iter().all(Result::is_ok), "{produced:?}");
    let list = weir_json(&broker, &["delayed", "list", "big", "--limit", "20"])?;
    ensure!(list["pending"] == 20, "{list}");
    let shown = list["records"].as_array().context("records")?;
    // 16 MiB is 18.6 of these batches: the list stops once it read 19.
    ensure!(
        shown.len() == 19 && list["records_cut"] == true,
        "{} shown",
        shown.len()
    );
    ensure!(
        shown
            .iter()
            .all(|r| r["value_bytes"] == 900_000 && r["error"].is_null()),
        "{list}"
    );
    let few = weir_json(&broker, &["delayed", "list", "big", "--limit", "5"])?;
    ensure!(
        few["records"].as_array().map(Vec::len) == Some(5) && few["records_cut"] == false,
        "{few}"
    );
    Ok(())
}

#[test]
fn a_consumer_reading_past_many_hidden_records_sees_no_error() -> anyhow::Result<()> {
    let broker = Broker::start(&[])?;
    let bootstrap = broker.bootstrap();
    common::create_topic_blocking(&bootstrap, "hidden", 1, &[])?;
    // 300 pending records in batches of one, then one plain record.
    let later = (now_ms() + 3_600_000).to_string();
    let mut records: Vec<Plain> = (0..300)
        .map(|i| record(i, &[(DELIVER_AT, later.clone())]))
        .collect();
    records.push(record(300, &[]));
    let produced = produce_with(
        &bootstrap,
        "hidden",
        &records,
        &[("batch.num.messages", "1")],
    )?;
    ensure!(produced.iter().all(Result::is_ok), "{produced:?}");
    // Fetches of at most 1 KiB read the pending batches a few at a time,
    // so about thirty answers hold hidden records only. librdkafka doubles
    // its partition fetch size (from 1 MiB) after each answer it finds no
    // message in and, at 1 GiB, reports each further one to the
    // application as MSG_SIZE_TOO_LARGE, unless the answer says why.
    let consumer: BaseConsumer = common::consumer_config(&bootstrap)
        .set("fetch.max.bytes", "1024")
        .set("message.max.bytes", "1024")
        .set("receive.message.max.bytes", "2048")
        .create()?;
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset("hidden", 0, Offset::Offset(0))?;
    consumer.assign(&assignment)?;
    let mut seen = Vec::new();
    // Any consumer error fails the poll.
    poll_until(&consumer, &mut seen, WAIT, |seen| !seen.is_empty())?;
    let got: Vec<(i64, Plain)> = seen.iter().map(|m| (m.offset(), Plain::of(m))).collect();
    ensure!(
        got == [(300, records[300].clone())],
        "only the plain record, at its offset: {got:?}"
    );
    Ok(())
}

/// `weir ARGS` against `broker`'s Kafka listener and admin API: its exit
/// code, stdout and stderr.
fn weir_tool(broker: &Broker, args: &[&str]) -> anyhow::Result<(i32, String, String)> {
    ensure!(broker.admin_addr().is_some(), "the broker has no admin API");
    let output = common::cli::command(broker, args)
        .output()
        .context("cannot run weir")?;
    Ok((
        output.status.code().unwrap_or(-1),
        String::from_utf8(output.stdout)?,
        String::from_utf8(output.stderr)?,
    ))
}

/// `weir delayed cancel TOPIC --partition 0 --offset OFFSET [MORE...]`, as
/// [`weir_tool`] runs it.
fn cancel_at(
    broker: &Broker,
    topic: &str,
    offset: &str,
    more: &[&str],
) -> anyhow::Result<(i32, String, String)> {
    let args = ["delayed", "cancel", topic, "--partition", "0", "--offset"];
    weir_tool(broker, &[&args[..], &[offset], more].concat())
}

/// `weir ARGS --json`'s document, which must exit 0.
fn weir_json(broker: &Broker, args: &[&str]) -> anyhow::Result<serde_json::Value> {
    let mut args = args.to_vec();
    args.push("--json");
    let (code, out, err) = weir_tool(broker, &args)?;
    ensure!(code == 0, "weir {args:?} exited {code}: {err}");
    serde_json::from_str(&out).with_context(|| format!("weir {args:?} printed {out:?}"))
}

/// The offsets `weir delayed list TOPIC --json` shows, in its order, and the
/// pending count it gives.
fn listed(broker: &Broker, topic: &str) -> anyhow::Result<(Vec<i64>, u64)> {
    let list = weir_json(broker, &["delayed", "list", topic])?;
    let offsets = list["records"]
        .as_array()
        .context("records")?
        .iter()
        .map(|r| r["offset"].as_i64().context("offset"))
        .collect::<anyhow::Result<_>>()?;
    Ok((offsets, list["pending"].as_u64().context("pending")?))
}

#[test]
fn the_tools_list_count_and_cancel_pending_records_and_a_cancel_survives_a_restart()
-> anyhow::Result<()> {
    let mut broker = Broker::start(&[])?;
    let topic = "tools";
    common::create_topic_blocking(&broker.bootstrap(), topic, 1, &[])?;
    let produced_at = now_ms();
    let records = vec![
        record(0, &[]),
        record(1, &[(DELAY_MS, "600000".into())]),
        record(2, &[(DELAY_MS, "2000".into()), ("k", "x".into())]),
        record(3, &[(DELIVER_AT, (produced_at + 1_200_000).to_string())]),
        // Cancelled before it is due, with seconds to spare.
        record(4, &[(DELAY_MS, "6000".into())]),
        record(5, &[(DELAY_MS, "7000".into())]),
    ];
    let offsets: Vec<i64> = produce(&broker.bootstrap(), topic, &records, "lz4")?
        .into_iter()
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow::anyhow!("a produce failed: {e}"))?;
    ensure!(offsets == [0, 1, 2, 3, 4, 5], "{offsets:?}");

    // Listed in due order, with their records, and delivered by nobody.
    let list = weir_json(&broker, &["delayed", "list", topic])?;
    ensure!(list["pending"] == 5, "{list}");
    let shown: Vec<(i64, String, String)> = list["records"]
        .as_array()
        .context("records")?
        .iter()
        .map(|r| {
            (
                r["offset"].as_i64().unwrap_or(-1),
                r["key"].as_str().unwrap_or_default().to_owned(),
                r["value"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let want: Vec<(i64, String, String)> = [2, 4, 5, 1, 3]
        .iter()
        .map(|&i| (i, format!("key-{i}"), format!("value-{i}")))
        .collect();
    ensure!(shown == want, "{shown:?}");
    let first = &list["records"][0];
    ensure!(
        first["headers"]
            == serde_json::json!([
                { "key": DELAY_MS, "value": "2000" },
                { "key": "k", "value": "x" },
            ]),
        "headers in order: {first}"
    );
    let due = first["due_ms"].as_i64().context("due")?;
    ensure!(
        (produced_at + 2_000..=now_ms() + 2_000).contains(&due),
        "due {due}, produced at {produced_at}"
    );
    // `topic describe` counts them and names the next due time.
    let described = weir_json(&broker, &["topic", "describe", topic])?;
    ensure!(
        described["delayed"]["pending"] == 5 && described["delayed"]["next_due_ms"] == due,
        "{described}"
    );
    let (code, text, err) = weir_tool(&broker, &["topic", "describe", topic])?;
    ensure!(
        code == 0 && text.contains("delayed records pending: 5, next due "),
        "{code} {text} {err}"
    );

    // Cancel one due soon and one due in ten minutes.
    for offset in ["4", "1"] {
        let (code, out, err) = cancel_at(&broker, topic, offset, &[])?;
        ensure!(code == 0 && out.contains("cancelled"), "{code} {out} {err}");
    }
    // What cannot be cancelled says why, with exit code 1.
    for (offset, why) in [
        ("4", "no longer pending"),
        ("0", "not a delayed record"),
        ("99", "no committed record"),
    ] {
        let (code, _, err) = cancel_at(&broker, topic, offset, &[])?;
        ensure!(
            code == 1 && err.contains(why),
            "offset {offset}: {code} {err}"
        );
    }
    let now = listed(&broker, topic)?;
    ensure!(now == (vec![2, 5, 3], 3), "after the cancels: {now:?}");

    // Copies come in due order: once 5's is read, 4's would have been.
    let consumer = consumer(&broker.bootstrap(), topic)?;
    let mut seen = Vec::new();
    poll_until(&consumer, &mut seen, WAIT, |seen| {
        seen.iter()
            .any(|m| header(m, DELAYED_FROM).as_deref() == Some("5"))
    })?;
    let read: Vec<(i64, Option<String>)> = seen
        .iter()
        .map(|m| (m.offset(), header(m, DELAYED_FROM)))
        .collect();
    let delivered: Vec<Option<String>> = read.iter().map(|(_, from)| from.clone()).collect();
    ensure!(
        delivered == [None, Some("2".into()), Some("5".into())],
        "the plain record, then 2 and 5, never a cancelled one or a marker: {read:?}"
    );
    let now = listed(&broker, topic)?;
    ensure!(now == (vec![3], 1), "after 2 and 5 were delivered: {now:?}");

    // A restart forgets no cancel: 1 stays cancelled, 3 pending.
    broker.sigkill()?;
    broker.restart()?;
    let now = listed(&broker, topic)?;
    ensure!(now == (vec![3], 1), "after a restart: {now:?}");
    let (code, _, err) = cancel_at(&broker, topic, "1", &[])?;
    ensure!(
        code == 1 && err.contains("no longer pending"),
        "{code} {err}"
    );
    let (code, out, err) = cancel_at(&broker, topic, "3", &["--json"])?;
    let cancelled: serde_json::Value =
        serde_json::from_str(&out).with_context(|| format!("exit {code}: {out:?} {err}"))?;
    ensure!(
        cancelled["cancelled"] == true && cancelled["offset"] == 3,
        "{cancelled}"
    );
    let now = listed(&broker, topic)?;
    ensure!(now == (vec![], 0), "after the last cancel: {now:?}");
    Ok(())
}

#[test]
fn the_tools_refuse_what_does_not_exist_and_say_when_no_admin_api_answers() -> anyhow::Result<()> {
    let broker = Broker::start(&[])?;
    let (code, _, err) = weir_tool(&broker, &["delayed", "list", "nothing"])?;
    ensure!(
        code == 1 && err.contains("no topic named nothing"),
        "{code} {err}"
    );
    common::create_topic_blocking(&broker.bootstrap(), "two", 2, &[])?;
    let (code, _, err) = weir_tool(
        &broker,
        &[
            "delayed",
            "cancel",
            "two",
            "--partition",
            "2",
            "--offset",
            "0",
        ],
    )?;
    ensure!(
        code == 1 && err.contains("has no partition 2"),
        "{code} {err}"
    );
    let (code, out, _) = weir_tool(&broker, &["delayed", "list", "two"])?;
    ensure!(
        code == 0 && out.contains("delayed records pending: 0"),
        "{code} {out}"
    );
    // No admin API there: exit code 3, as for an unreachable broker.
    let closed = format!("127.0.0.1:{}", common::reserve_port()?);
    let output = common::cli::command(&broker, &["delayed", "list", "two"])
        .env("WEIR_ADMIN_URL", &closed)
        .output()?;
    let err = String::from_utf8_lossy(&output.stderr);
    ensure!(
        output.status.code() == Some(3) && err.contains("no admin API answered"),
        "{:?} {err}",
        output.status
    );
    // `topic describe` still describes, and says what it could not learn.
    let output = common::cli::command(&broker, &["topic", "describe", "two"])
        .env("WEIR_ADMIN_URL", &closed)
        .output()?;
    let out = String::from_utf8_lossy(&output.stdout);
    ensure!(
        output.status.success() && out.contains("delayed records pending: unknown"),
        "{out}"
    );
    Ok(())
}
