//! ListOffsets through librdkafka: the earliest and latest offsets
//! (watermarks) and offsetsForTimes, which must return the first offset whose
//! timestamp is at or after the one asked for, and the end (-1) for a
//! timestamp after every record.

mod common;

use common::Broker;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::BaseRecord;
use rdkafka::{Offset, TopicPartitionList};

/// A base far from "now", so a broker that stamped its own time would be caught.
const BASE_MS: i64 = 1_600_000_000_000;

/// Produce one record per timestamp in `stamps` to partition 0 of `topic`.
/// With `one_batch` they share a batch; otherwise each is its own batch.
fn produce_stamped(
    bootstrap: &str,
    topic: &str,
    stamps: &[i64],
    one_batch: bool,
) -> anyhow::Result<()> {
    let mut config = common::producer_config(bootstrap);
    if one_batch {
        config
            .set("linger.ms", "2000")
            .set("batch.num.messages", "10000");
    }
    let producer = common::tracked_producer(&config)?;
    for (i, ts) in stamps.iter().enumerate() {
        let value = format!("at-{ts}");
        common::send_tracked(
            &producer,
            BaseRecord::with_opaque_to(topic, Box::new(i as u64))
                .partition(0)
                .payload(value.as_bytes())
                .timestamp(*ts),
        )?;
        if !one_batch {
            common::flush_all_delivered(&producer, 1)?;
        }
    }
    if one_batch {
        common::flush_all_delivered(&producer, stamps.len())?;
    }
    Ok(())
}

/// offsetsForTimes for each timestamp in `targets` on partition 0 of `topic`.
fn offsets_for(bootstrap: &str, topic: &str, targets: &[i64]) -> anyhow::Result<Vec<Offset>> {
    let consumer: BaseConsumer = common::consumer_config(bootstrap).create()?;
    let mut out = Vec::new();
    for ts in targets {
        let mut query = TopicPartitionList::new();
        query.add_partition_offset(topic, 0, Offset::Offset(*ts))?;
        let answer = consumer.offsets_for_times(query, common::CLIENT_TIMEOUT)?;
        let element = answer
            .elements_for_topic(topic)
            .into_iter()
            .next()
            .ok_or_else(|| anyhow::anyhow!("no answer for {topic}/0"))?;
        if let Err(err) = element.error() {
            anyhow::bail!("offsetsForTimes({ts}): {err}");
        }
        out.push(element.offset());
    }
    Ok(out)
}

/// Timestamps with a repeat, as a user's records often have.
const STAMPS: [i64; 5] = [
    BASE_MS + 1000,
    BASE_MS + 2000,
    BASE_MS + 2000,
    BASE_MS + 3000,
    BASE_MS + 5000,
];

/// Queries and the offset Kafka answers for each, over `STAMPS` at offsets 0..5.
fn expected_answers() -> Vec<(i64, Offset)> {
    vec![
        (BASE_MS, Offset::Offset(0)),
        (BASE_MS + 1000, Offset::Offset(0)),
        (BASE_MS + 1001, Offset::Offset(1)),
        (BASE_MS + 2000, Offset::Offset(1)),
        (BASE_MS + 2500, Offset::Offset(3)),
        (BASE_MS + 3000, Offset::Offset(3)),
        (BASE_MS + 4999, Offset::Offset(4)),
        (BASE_MS + 5000, Offset::Offset(4)),
        (BASE_MS + 5001, Offset::End),
    ]
}

fn check_offsets_for_times(one_batch: bool) -> anyhow::Result<()> {
    let broker = Broker::start(&[])?;
    let bootstrap = broker.bootstrap();
    let topic = "stamped";
    common::create_topic_blocking(&bootstrap, topic, 1, &[])?;
    produce_stamped(&bootstrap, topic, &STAMPS, one_batch)?;
    let answers = expected_answers();
    let targets: Vec<i64> = answers.iter().map(|(ts, _)| *ts).collect();
    let got = offsets_for(&bootstrap, topic, &targets)?;
    for ((ts, want), got) in answers.iter().zip(&got) {
        assert_eq!(got, want, "offsetsForTimes({ts}) (base + {})", ts - BASE_MS);
    }
    Ok(())
}

#[test]
fn offsets_for_times_returns_first_offset_at_or_after_timestamp() -> anyhow::Result<()> {
    check_offsets_for_times(false)
}

#[test]
fn offsets_for_times_finds_the_record_inside_a_batch() -> anyhow::Result<()> {
    check_offsets_for_times(true)
}

#[test]
fn earliest_and_latest_offsets_follow_the_log() -> anyhow::Result<()> {
    let broker = Broker::start(&[])?;
    let bootstrap = broker.bootstrap();
    let topic = "watermarks";
    common::create_topic_blocking(&bootstrap, topic, 2, &[])?;
    let consumer: BaseConsumer = common::consumer_config(&bootstrap).create()?;
    assert_eq!(
        consumer.fetch_watermarks(topic, 0, common::CLIENT_TIMEOUT)?,
        (0, 0),
        "empty partition"
    );

    let producer = common::tracked_producer(&common::producer_config(&bootstrap))?;
    for i in 0..25u64 {
        common::send_tracked(
            &producer,
            BaseRecord::with_opaque_to(topic, Box::new(i))
                .partition(0)
                .payload(b"x"),
        )?;
    }
    common::flush_all_delivered(&producer, 25)?;
    assert_eq!(
        consumer.fetch_watermarks(topic, 0, common::CLIENT_TIMEOUT)?,
        (0, 25)
    );
    assert_eq!(
        consumer.fetch_watermarks(topic, 1, common::CLIENT_TIMEOUT)?,
        (0, 0),
        "other partition untouched"
    );

    for i in 0..5u64 {
        common::send_tracked(
            &producer,
            BaseRecord::with_opaque_to(topic, Box::new(i))
                .partition(0)
                .payload(b"late"),
        )?;
    }
    common::flush_all_delivered(&producer, 5)?;
    assert_eq!(
        consumer.fetch_watermarks(topic, 0, common::CLIENT_TIMEOUT)?,
        (0, 30)
    );
    Ok(())
}
