//! Kafka transactions with real clients (librdkafka through the rdkafka
//! crate) against a real `weir serve`: commits become visible to
//! read_committed consumers exactly once, aborts never, a second producer
//! of the same transactional id fences the first, an abandoned transaction
//! is aborted at its timeout, and misuse gets Kafka's error codes.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::Context;
use common::Broker;
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};

const TIMEOUT: Duration = Duration::from_secs(30);

fn start() -> anyhow::Result<Broker> {
    Broker::start(&[
        "--set",
        "transaction.abort.timed.out.transaction.cleanup.interval.ms=200",
        "--set",
        "transaction.state.log.num.partitions=4",
    ])
}

/// A transactional producer whose delivery reports a background thread
/// polls (which committing and aborting need).
type TxnProducer = ThreadedProducer<DefaultProducerContext>;

fn txn_producer(bootstrap: &str, id: &str, timeout_ms: u32) -> anyhow::Result<TxnProducer> {
    let producer: TxnProducer = common::producer_config(bootstrap)
        .set("transactional.id", id)
        .set("transaction.timeout.ms", timeout_ms.to_string())
        .set("message.timeout.ms", timeout_ms.to_string())
        .create()
        .context("cannot create a transactional producer")?;
    producer
        .init_transactions(TIMEOUT)
        .context("init_transactions")?;
    Ok(producer)
}

fn send(producer: &TxnProducer, topic: &str, partition: i32, value: &str) -> anyhow::Result<()> {
    producer
        .send(
            BaseRecord::to(topic)
                .partition(partition)
                .key(value)
                .payload(value),
        )
        .map_err(|(e, _)| e)
        .context("send")?;
    Ok(())
}

/// Every value a consumer with `isolation` reads from `topic` (its
/// `partitions`), up to the offset ListOffsets gives that isolation.
fn read_all(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    isolation: &str,
) -> anyhow::Result<Vec<String>> {
    let consumer: BaseConsumer = common::consumer_config(bootstrap)
        .set("isolation.level", isolation)
        .create()?;
    let mut assignment = TopicPartitionList::new();
    let mut ends = std::collections::HashMap::new();
    for p in 0..partitions {
        let (low, high) = consumer.fetch_watermarks(topic, p, TIMEOUT)?;
        // For read_committed librdkafka's high watermark query answers the
        // last stable offset.
        ends.insert(p, high);
        assignment.add_partition_offset(topic, p, Offset::Offset(low))?;
    }
    consumer.assign(&assignment)?;
    let mut values = Vec::new();
    // Markers are never delivered: the read is done when the position (which
    // moves past them) reaches each end.
    common::wait_until(TIMEOUT, "reading to the end", || {
        if let Some(message) = consumer.poll(Duration::from_millis(100)) {
            let message = message?;
            if let Some(p) = message.payload() {
                values.push(String::from_utf8_lossy(p).into_owned());
            }
        }
        let position = consumer.position()?;
        Ok(position.elements().iter().all(|e| match e.offset() {
            Offset::Offset(at) => at >= ends.get(&e.partition()).copied().unwrap_or(0),
            _ => ends.get(&e.partition()).copied().unwrap_or(0) == 0,
        }))
    })?;
    values.sort();
    Ok(values)
}

#[test]
fn read_committed_consumers_see_each_committed_record_once_and_no_aborted_one() -> anyhow::Result<()>
{
    let broker = start()?;
    let bootstrap = broker.bootstrap();
    common::create_topic_blocking(&bootstrap, "out", 3, &[])?;
    let producer = txn_producer(&bootstrap, "tx-a", 60_000)?;
    let mut committed = BTreeSet::new();
    let mut all = BTreeSet::new();
    for t in 0..20 {
        producer.begin_transaction()?;
        for r in 0..5 {
            let value = format!("t{t:02}-r{r}");
            send(&producer, "out", r % 3, &value)?;
            all.insert(value.clone());
            if t % 3 != 0 {
                committed.insert(value);
            }
        }
        if t % 3 == 0 {
            // Written first (librdkafka drops what it has not sent when it
            // aborts): the records are in the log, and must stay unseen.
            producer.flush(TIMEOUT)?;
            producer.abort_transaction(TIMEOUT)?;
        } else {
            producer.commit_transaction(TIMEOUT)?;
        }
    }
    let read: BTreeSet<String> = read_all(&bootstrap, "out", 3, "read_committed")?
        .into_iter()
        .collect();
    assert_eq!(read, committed, "exactly the committed records");
    let uncommitted = read_all(&bootstrap, "out", 3, "read_uncommitted")?;
    assert_eq!(
        uncommitted.iter().cloned().collect::<BTreeSet<_>>(),
        all,
        "read_uncommitted sees every record sent"
    );
    assert_eq!(uncommitted.len(), all.len(), "each record once");

    // An open transaction holds read_committed consumers back; its commit
    // releases them.
    producer.begin_transaction()?;
    send(&producer, "out", 0, "open-1")?;
    producer.flush(TIMEOUT)?;
    let before = read_all(&bootstrap, "out", 3, "read_committed")?;
    assert!(!before.contains(&"open-1".to_string()));
    producer.commit_transaction(TIMEOUT)?;
    let after = read_all(&bootstrap, "out", 3, "read_committed")?;
    assert!(after.contains(&"open-1".to_string()));
    Ok(())
}

#[test]
fn a_second_producer_of_the_same_transactional_id_fences_the_first() -> anyhow::Result<()> {
    let broker = start()?;
    let bootstrap = broker.bootstrap();
    common::create_topic_blocking(&bootstrap, "fenced", 1, &[])?;
    let first = txn_producer(&bootstrap, "tx-f", 60_000)?;
    first.begin_transaction()?;
    send(&first, "fenced", 0, "zombie")?;
    first.flush(TIMEOUT)?;
    // The newcomer's init aborts the open transaction and bumps the epoch.
    let second = txn_producer(&bootstrap, "tx-f", 60_000)?;
    second.begin_transaction()?;
    send(&second, "fenced", 0, "live")?;
    second.commit_transaction(TIMEOUT)?;
    let err = first
        .commit_transaction(TIMEOUT)
        .expect_err("the zombie's commit is refused");
    assert!(
        matches!(&err, KafkaError::Transaction(e) if e.is_fatal()),
        "fenced is fatal to the zombie: {err:?}"
    );
    assert_eq!(
        read_all(&bootstrap, "fenced", 1, "read_committed")?,
        ["live"]
    );
    Ok(())
}

#[test]
fn an_abandoned_transaction_is_aborted_at_its_timeout() -> anyhow::Result<()> {
    let broker = start()?;
    let bootstrap = broker.bootstrap();
    common::create_topic_blocking(&bootstrap, "abandoned", 1, &[])?;
    let producer = txn_producer(&bootstrap, "tx-t", 2_000)?;
    producer.begin_transaction()?;
    send(&producer, "abandoned", 0, "never")?;
    producer.flush(TIMEOUT)?;
    // The producer goes away without ending it (its process died).
    drop(producer);
    let other: TxnProducer = common::producer_config(&bootstrap).create()?;
    send(&other, "abandoned", 0, "after")?;
    other.flush(TIMEOUT)?;
    // read_committed consumers move past it once the coordinator aborts it.
    let consumer: BaseConsumer = common::consumer_config(&bootstrap)
        .set("isolation.level", "read_committed")
        .create()?;
    common::wait_until(TIMEOUT, "the abandoned transaction's abort", || {
        let (_, stable) = consumer.fetch_watermarks("abandoned", 0, TIMEOUT)?;
        Ok(stable == 3)
    })?;
    assert_eq!(
        read_all(&bootstrap, "abandoned", 1, "read_committed")?,
        ["after"]
    );
    Ok(())
}

#[test]
fn misuse_of_the_transactional_apis_gets_kafkas_error_codes() -> anyhow::Result<()> {
    use common::raw::{RawClient, produce_error, produce_request, txn_batch};
    use kafka_protocol::ResponseError as E;
    use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
    use kafka_protocol::messages::*;

    let broker = start()?;
    let bootstrap = broker.bootstrap();
    common::create_topic_blocking(&bootstrap, "t", 1, &[])?;
    let mut raw = RawClient::connect(&bootstrap)?;
    let id = |s: &str| TransactionalId(s.to_string().into());
    let found = raw.call(
        &FindCoordinatorRequest::default()
            .with_key_type(1)
            .with_key("tx-m".to_string().into()),
        3,
    )?;
    assert_eq!(found.error_code, 0, "{:?}", found.error_message);
    let init = |raw: &mut RawClient, timeout_ms: i32| {
        common::raw::init_producer_id(raw, "tx-m", timeout_ms)
    };
    // A timeout past transaction.max.timeout.ms (15 minutes).
    assert_eq!(
        init(&mut raw, 3_600_000)?.error_code,
        E::InvalidTransactionTimeout.code()
    );
    let producer = init(&mut raw, 60_000)?;
    assert_eq!(producer.error_code, 0);
    let (pid, epoch) = (producer.producer_id, producer.producer_epoch);

    let end = |raw: &mut RawClient, txn: &str, epoch: i16| {
        raw.call(
            &EndTxnRequest::default()
                .with_transactional_id(id(txn))
                .with_producer_id(pid)
                .with_producer_epoch(epoch)
                .with_committed(true),
            3,
        )
        .map(|r| r.error_code)
    };
    // EndTxn for an id the coordinator does not know.
    assert_eq!(
        end(&mut raw, "never-initialized", epoch)?,
        E::InvalidProducerIdMapping.code()
    );
    // EndTxn with no transaction open.
    assert_eq!(end(&mut raw, "tx-m", epoch)?, E::InvalidTxnState.code());

    let add = |raw: &mut RawClient, topic: &str, epoch: i16| -> anyhow::Result<i16> {
        let response = raw.call(
            &AddPartitionsToTxnRequest::default()
                .with_v3_and_below_transactional_id(id("tx-m"))
                .with_v3_and_below_producer_id(pid)
                .with_v3_and_below_producer_epoch(epoch)
                .with_v3_and_below_topics(vec![
                    AddPartitionsToTxnTopic::default()
                        .with_name(TopicName(topic.to_string().into()))
                        .with_partitions(vec![0]),
                ]),
            3,
        )?;
        Ok(response.results_by_topic_v3_and_below[0].results_by_partition[0].partition_error_code)
    };
    // A stale epoch is fenced; an unknown topic is named.
    assert_eq!(add(&mut raw, "t", epoch - 1)?, E::ProducerFenced.code());
    assert_eq!(
        add(&mut raw, "nope", epoch)?,
        E::UnknownTopicOrPartition.code()
    );

    // A transactional batch to a partition not in an open transaction, and
    // one that does not name its transactional id.
    let mut produce = produce_request("t", 0, txn_batch((pid.0, epoch))?);
    produce.transactional_id = Some(id("tx-m"));
    let refused = raw.call(&produce, 9)?;
    assert_eq!(produce_error(&refused)?, E::InvalidTxnState.code());
    produce.transactional_id = None;
    assert_eq!(
        produce_error(&raw.call(&produce, 9)?)?,
        E::InvalidTxnState.code()
    );

    // Once added, the same batch is taken, and the transaction described.
    assert_eq!(add(&mut raw, "t", epoch)?, 0);
    produce.transactional_id = Some(id("tx-m"));
    assert_eq!(produce_error(&raw.call(&produce, 9)?)?, 0);
    let described = raw.call(
        &DescribeTransactionsRequest::default()
            .with_transactional_ids(vec![id("tx-m"), id("unknown")]),
        0,
    )?;
    let state = &described.transaction_states[0];
    assert_eq!(state.transaction_state.as_str(), "Ongoing");
    assert_eq!((state.producer_id, state.producer_epoch), (pid, epoch));
    assert_eq!(state.topics[0].partitions, [0]);
    assert_eq!(
        described.transaction_states[1].error_code,
        E::TransactionalIdNotFound.code()
    );
    let listed = raw.call(
        &ListTransactionsRequest::default()
            .with_state_filters(vec![
                "Ongoing".to_string().into(),
                "Bogus".to_string().into(),
            ])
            .with_duration_filter(-1),
        1,
    )?;
    assert_eq!(listed.transaction_states.len(), 1);
    assert_eq!(listed.unknown_state_filters.len(), 1);
    // v2 (KIP-1152): a pattern matches whole transactional ids.
    let matching = |raw: &mut RawClient, pattern: &str| {
        raw.call(
            &ListTransactionsRequest::default()
                .with_duration_filter(-1)
                .with_transactional_id_pattern(Some(pattern.to_string().into())),
            2,
        )
    };
    let listed = matching(&mut raw, "tx-.*")?;
    assert_eq!(listed.error_code, 0);
    assert_eq!(listed.transaction_states.len(), 1);
    assert_eq!(
        listed.transaction_states[0].transactional_id.as_str(),
        "tx-m"
    );
    assert!(matching(&mut raw, "tx")?.transaction_states.is_empty());
    assert_eq!(
        matching(&mut raw, "tx-(")?.error_code,
        E::InvalidRegularExpression.code()
    );
    // The partition's leader names the producer and where its open
    // transaction began (a hanging transaction shows here).
    let producers = raw.call(
        &DescribeProducersRequest::default().with_topics(vec![
            describe_producers_request::TopicRequest::default()
                .with_name(TopicName("t".to_string().into()))
                .with_partition_indexes(vec![0]),
        ]),
        0,
    )?;
    let partition = &producers.topics[0].partitions[0];
    assert_eq!(partition.error_code, 0);
    let active = &partition.active_producers[0];
    assert_eq!(active.producer_id, pid);
    assert_eq!(active.current_txn_start_offset, 0);
    // Offsets for a group the producer did not add (AddOffsetsToTxn), at a
    // version that has the producer add it.
    let offsets = raw.call(
        &TxnOffsetCommitRequest::default()
            .with_transactional_id(id("tx-m"))
            .with_group_id(GroupId("never-added".to_string().into()))
            .with_producer_id(pid)
            .with_producer_epoch(epoch)
            .with_generation_id(-1)
            .with_topics(vec![
                txn_offset_commit_request::TxnOffsetCommitRequestTopic::default()
                    .with_name(TopicName("t".to_string().into()))
                    .with_partitions(vec![
                        txn_offset_commit_request::TxnOffsetCommitRequestPartition::default()
                            .with_partition_index(0)
                            .with_committed_offset(1)
                            .with_committed_leader_epoch(-1),
                    ]),
            ]),
        3,
    )?;
    assert_eq!(
        offsets.topics[0].partitions[0].error_code,
        E::InvalidTxnState.code()
    );
    assert_eq!(end(&mut raw, "tx-m", epoch)?, 0);
    Ok(())
}

#[test]
fn consume_transform_produce_commits_output_and_offsets_together() -> anyhow::Result<()> {
    let broker = start()?;
    let bootstrap = broker.bootstrap();
    common::create_topic_blocking(&bootstrap, "in", 1, &[])?;
    common::create_topic_blocking(&bootstrap, "out", 2, &[])?;
    let plain: TxnProducer = common::producer_config(&bootstrap).create()?;
    const INPUTS: usize = 60;
    for i in 0..INPUTS {
        send(&plain, "in", 0, &format!("in-{i:03}"))?;
    }
    plain.flush(TIMEOUT)?;

    let consumer: BaseConsumer = common::consumer_config(&bootstrap)
        .set("group.id", "ctp")
        .set("isolation.level", "read_committed")
        .create()?;
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset("in", 0, Offset::Beginning)?;
    consumer.assign(&assignment)?;
    let producer = txn_producer(&bootstrap, "ctp-tx", 60_000)?;
    let mut next = 0i64;
    let mut committed_outputs = BTreeSet::new();
    let mut t = 0;
    while next < INPUTS as i64 {
        t += 1;
        anyhow::ensure!(t < 200, "the transform loop ran {t} transactions");
        let start = next;
        producer.begin_transaction()?;
        let mut outputs = Vec::new();
        while outputs.len() < 5 && next < INPUTS as i64 {
            let Some(message) = consumer.poll(Duration::from_secs(5)) else {
                anyhow::bail!("no input at offset {next}");
            };
            let message = message?;
            anyhow::ensure!(
                message.offset() == next,
                "read {} at {next}",
                message.offset()
            );
            let input = String::from_utf8_lossy(message.payload().unwrap_or_default()).into_owned();
            let output = input.replace("in-", "out-");
            send(&producer, "out", (next % 2) as i32, &output)?;
            outputs.push(output);
            next += 1;
        }
        if t % 4 == 0 {
            // Abort: neither the outputs nor the offsets it sent count;
            // the inputs are read again.
            let mut offsets = TopicPartitionList::new();
            offsets.add_partition_offset("out", 1, Offset::Offset(999))?;
            let group = consumer
                .group_metadata()
                .context("the consumer has no group metadata")?;
            producer.send_offsets_to_transaction(&offsets, &group, TIMEOUT)?;
            producer.flush(TIMEOUT)?;
            producer.abort_transaction(TIMEOUT)?;
            consumer.seek("in", 0, Offset::Offset(start), TIMEOUT)?;
            next = start;
            continue;
        }
        let mut offsets = TopicPartitionList::new();
        offsets.add_partition_offset("in", 0, Offset::Offset(next))?;
        let group = consumer
            .group_metadata()
            .context("the consumer has no group metadata")?;
        producer.send_offsets_to_transaction(&offsets, &group, TIMEOUT)?;
        producer.commit_transaction(TIMEOUT)?;
        committed_outputs.extend(outputs);
    }
    assert_eq!(committed_outputs.len(), INPUTS);
    let read = read_all(&bootstrap, "out", 2, "read_committed")?;
    assert_eq!(read.len(), INPUTS, "each output once: {read:?}");
    assert_eq!(read.into_iter().collect::<BTreeSet<_>>(), committed_outputs);
    // The group's offset moved with the commits only: it is past every input.
    let fresh: BaseConsumer = common::consumer_config(&bootstrap)
        .set("group.id", "ctp")
        .set("isolation.level", "read_committed")
        .create()?;
    let mut asked = TopicPartitionList::new();
    asked.add_partition("in", 0);
    asked.add_partition("out", 1);
    let committed = fresh.committed_offsets(asked, TIMEOUT)?;
    assert_eq!(
        committed.elements()[0].offset(),
        Offset::Offset(INPUTS as i64)
    );
    assert_eq!(
        committed.elements()[1].offset(),
        Offset::Invalid,
        "offsets sent in aborted transactions never take effect"
    );
    Ok(())
}

#[test]
fn a_broker_killed_mid_transaction_keeps_commits_hides_aborts_and_finishes_the_open_one()
-> anyhow::Result<()> {
    let mut broker = start()?;
    let bootstrap = broker.bootstrap();
    common::create_topic_blocking(&bootstrap, "k", 2, &[])?;
    let producer = txn_producer(&bootstrap, "tx-k", 60_000)?;
    let mut expected = Vec::new();
    for (t, commit) in [(0, true), (1, false), (2, true)] {
        producer.begin_transaction()?;
        for r in 0..4 {
            let value = format!("t{t}-r{r}");
            send(&producer, "k", r % 2, &value)?;
            if commit {
                expected.push(value);
            }
        }
        producer.flush(TIMEOUT)?;
        if commit {
            producer.commit_transaction(TIMEOUT)?;
        } else {
            producer.abort_transaction(TIMEOUT)?;
        }
    }
    // A transaction open, its records and a group's offsets written, when
    // the broker dies.
    producer.begin_transaction()?;
    for r in 0..4 {
        send(&producer, "k", r % 2, &format!("t3-r{r}"))?;
    }
    producer.flush(TIMEOUT)?;
    let group_consumer: BaseConsumer = common::consumer_config(&bootstrap)
        .set("group.id", "kg")
        .create()?;
    let mut offsets = TopicPartitionList::new();
    offsets.add_partition_offset("k", 0, Offset::Offset(42))?;
    let group = group_consumer
        .group_metadata()
        .context("no group metadata")?;
    producer.send_offsets_to_transaction(&offsets, &group, TIMEOUT)?;
    broker.sigkill()?;
    broker.restart()?;
    expected.sort();
    assert_eq!(read_all(&bootstrap, "k", 2, "read_committed")?, expected);
    // The coordinator replayed the open transaction: its commit goes through.
    producer.commit_transaction(TIMEOUT)?;
    expected.extend((0..4).map(|r| format!("t3-r{r}")));
    expected.sort();
    assert_eq!(read_all(&bootstrap, "k", 2, "read_committed")?, expected);
    // The group's offset, written before the crash, took effect with the commit.
    let mut asked = TopicPartitionList::new();
    asked.add_partition("k", 0);
    let fresh: BaseConsumer = common::consumer_config(&bootstrap)
        .set("group.id", "kg")
        .create()?;
    let committed = fresh.committed_offsets(asked, TIMEOUT)?;
    assert_eq!(committed.elements()[0].offset(), Offset::Offset(42));
    Ok(())
}

#[test]
fn weir_txn_lists_describes_and_aborts_a_hanging_transaction_and_weir_consume_reads_committed()
-> anyhow::Result<()> {
    use common::cli::weir_ok;
    let broker = start()?;
    let bootstrap = broker.bootstrap();
    common::create_topic_blocking(&bootstrap, "h", 1, &[])?;
    let committer = txn_producer(&bootstrap, "tx-ok", 60_000)?;
    committer.begin_transaction()?;
    send(&committer, "h", 0, "kept")?;
    committer.commit_transaction(TIMEOUT)?;
    // A transaction left open (its producer stuck), long before its timeout.
    let stuck = txn_producer(&bootstrap, "tx-stuck", 600_000)?;
    stuck.begin_transaction()?;
    send(&stuck, "h", 0, "hanging")?;
    stuck.flush(TIMEOUT)?;
    committer.begin_transaction()?;
    send(&committer, "h", 0, "after")?;
    committer.commit_transaction(TIMEOUT)?;

    let listed: serde_json::Value = serde_json::from_str(&weir_ok(
        &broker,
        &["txn", "list", "--state", "Ongoing", "--json"],
        b"",
    )?)?;
    assert_eq!(listed["transactions"][0]["transactional_id"], "tx-stuck");
    assert_eq!(listed["transactions"].as_array().map(Vec::len), Some(1));
    for (pattern, count) in [("tx-s.*", 1), ("stuck", 0)] {
        let listed: serde_json::Value = serde_json::from_str(&weir_ok(
            &broker,
            &[
                "txn",
                "list",
                "--transactional-id-pattern",
                pattern,
                "--json",
            ],
            b"",
        )?)?;
        assert_eq!(
            listed["transactions"].as_array().map(Vec::len),
            Some(count),
            "{pattern}"
        );
    }
    let refused = common::cli::weir(
        &broker,
        &["txn", "list", "--transactional-id-pattern", "tx-("],
        b"",
    )?;
    assert_eq!(refused.status.code(), Some(2), "a pattern that is no regex");
    let described: serde_json::Value = serde_json::from_str(&weir_ok(
        &broker,
        &["txn", "describe", "tx-stuck", "--json"],
        b"",
    )?)?;
    assert_eq!(described["state"], "Ongoing");
    assert_eq!(described["partitions"][0]["topic"], "h");
    let text = weir_ok(&broker, &["txn", "describe", "tx-stuck"], b"")?;
    assert!(text.contains("Ongoing") && text.contains("h-0"), "{text}");

    // read_committed stops at the hanging transaction.
    let consume = |isolation: &str| {
        weir_ok(
            &broker,
            &["consume", "h", "--from-beginning", "--isolation", isolation],
            b"",
        )
    };
    assert_eq!(consume("read_committed")?, "kept\n");
    assert_eq!(consume("read_uncommitted")?, "kept\nhanging\nafter\n");

    // The operator aborts it where it began (offset 2: after "kept" and its marker).
    let aborted: serde_json::Value = serde_json::from_str(&weir_ok(
        &broker,
        &[
            "txn",
            "abort",
            "--topic",
            "h",
            "--partition",
            "0",
            "--start-offset",
            "2",
            "--json",
        ],
        b"",
    )?)?;
    assert_eq!(aborted["aborted"], true);
    assert_eq!(consume("read_committed")?, "kept\nafter\n");
    Ok(())
}

/// KIP-890 part 2, as a Java client 4.0+ speaks it once the broker
/// finalizes `transaction.version` 2 (no client these tests run speaks it,
/// so the requests are sent by hand, at the versions that client sends):
/// partitions and group offsets join the transaction with the produce and
/// the TxnOffsetCommit, every EndTxn bumps the epoch and answers it, a
/// batch of an ended transaction is fenced, a retried EndTxn is answered
/// again, and an abort with nothing open still ends.
#[test]
fn transaction_version_2_bumps_the_epoch_at_every_end_and_adds_partitions_as_they_are_written()
-> anyhow::Result<()> {
    use common::raw::{RawClient, produce_error, produce_request, txn_record};
    use kafka_protocol::ResponseError as E;
    use kafka_protocol::messages::txn_offset_commit_request::{
        TxnOffsetCommitRequestPartition, TxnOffsetCommitRequestTopic,
    };
    use kafka_protocol::messages::*;

    let broker = start()?;
    let bootstrap = broker.bootstrap();
    common::create_topic_blocking(&bootstrap, "tv2", 2, &[])?;
    let mut raw = RawClient::connect(&bootstrap)?;

    let versions = raw.call(&ApiVersionsRequest::default(), 3)?;
    let finalized = versions
        .finalized_features
        .iter()
        .find(|f| f.name.as_str() == "transaction.version")
        .context("transaction.version is not finalized")?;
    assert_eq!(finalized.max_version_level, 2);
    let max = |key: ApiKey| {
        versions
            .api_keys
            .iter()
            .find(|k| k.api_key == key as i16)
            .map_or(-1, |k| k.max_version)
    };
    assert!(max(ApiKey::EndTxn) >= 5 && max(ApiKey::Produce) >= 12);
    assert!(max(ApiKey::TxnOffsetCommit) >= 5);

    let txn_id = || TransactionalId("tx-v2".to_string().into());
    let found = raw.call(
        &FindCoordinatorRequest::default()
            .with_key_type(1)
            .with_key("tx-v2".to_string().into()),
        3,
    )?;
    assert_eq!(found.error_code, 0, "{:?}", found.error_message);
    let init = common::raw::init_producer_id(&mut raw, "tx-v2", 60_000)?;
    assert_eq!(init.error_code, 0);
    let pid = init.producer_id.0;
    let e0 = init.producer_epoch;

    let produce = |raw: &mut RawClient, partition: i32, epoch: i16, seq: i32, value: &str| {
        let mut request = produce_request("tv2", partition, txn_record((pid, epoch), seq, value)?);
        request.transactional_id = Some(txn_id());
        produce_error(&raw.call(&request, 12)?)
    };
    let end = |raw: &mut RawClient, epoch: i16, commit: bool| -> anyhow::Result<(i16, i64, i16)> {
        let r = raw.call(
            &EndTxnRequest::default()
                .with_transactional_id(txn_id())
                .with_producer_id(pid.into())
                .with_producer_epoch(epoch)
                .with_committed(commit),
            5,
        )?;
        Ok((r.error_code, r.producer_id.0, r.producer_epoch))
    };
    let commit_offset = |raw: &mut RawClient, epoch: i16, offset: i64| -> anyhow::Result<i16> {
        let r = raw.call(
            &TxnOffsetCommitRequest::default()
                .with_transactional_id(txn_id())
                .with_group_id(GroupId("tv2-group".to_string().into()))
                .with_producer_id(pid.into())
                .with_producer_epoch(epoch)
                .with_generation_id(-1)
                .with_topics(vec![
                    TxnOffsetCommitRequestTopic::default()
                        .with_name(TopicName("tv2".to_string().into()))
                        .with_partitions(vec![
                            TxnOffsetCommitRequestPartition::default()
                                .with_partition_index(0)
                                .with_committed_offset(offset)
                                .with_committed_leader_epoch(-1)
                                .with_committed_metadata(Some(String::new().into())),
                        ]),
                ]),
            5,
        )?;
        Ok(r.topics[0].partitions[0].error_code)
    };
    let committed_offset = |raw: &mut RawClient| -> anyhow::Result<i64> {
        let fetched = raw.call(
            &OffsetFetchRequest::default()
                .with_group_id(GroupId("tv2-group".to_string().into()))
                .with_topics(None),
            7,
        )?;
        Ok(fetched
            .topics
            .iter()
            .flat_map(|t| &t.partitions)
            .find(|p| p.partition_index == 0)
            .map_or(-1, |p| p.committed_offset))
    };

    // The first transaction: no AddPartitionsToTxn, the produce opens it.
    assert_eq!(produce(&mut raw, 0, e0, 0, "first")?, 0);
    let described = raw.call(
        &DescribeTransactionsRequest::default().with_transactional_ids(vec![txn_id()]),
        0,
    )?;
    let state = &described.transaction_states[0];
    assert_eq!(state.transaction_state.as_str(), "Ongoing");
    assert_eq!(state.topics[0].partitions, [0]);
    let e1 = e0 + 1;
    assert_eq!(
        end(&mut raw, e0, true)?,
        (0, pid, e1),
        "the commit bumps the epoch"
    );
    // A late batch of the ended transaction, to its partition (whose marker
    // carries the new epoch) and to another, is fenced.
    assert_eq!(
        produce(&mut raw, 0, e0, 1, "late")?,
        E::InvalidProducerEpoch.code()
    );
    assert_eq!(
        produce(&mut raw, 1, e0, 0, "late")?,
        E::InvalidProducerEpoch.code()
    );
    // A retried EndTxn whose answer was lost is answered again.
    assert_eq!(end(&mut raw, e0, true)?, (0, pid, e1));

    // The second transaction writes and commits offsets without
    // AddOffsetsToTxn, and aborts: neither the record nor the offset stays.
    assert_eq!(produce(&mut raw, 1, e1, 0, "aborted")?, 0);
    assert_eq!(commit_offset(&mut raw, e1, 5)?, 0);
    let e2 = e1 + 1;
    assert_eq!(end(&mut raw, e1, false)?, (0, pid, e2));
    assert_eq!(committed_offset(&mut raw)?, -1, "an aborted offset commit");

    // The third commits both.
    assert_eq!(produce(&mut raw, 0, e2, 0, "third")?, 0);
    assert_eq!(commit_offset(&mut raw, e2, 7)?, 0);
    let e3 = e2 + 1;
    assert_eq!(end(&mut raw, e2, true)?, (0, pid, e3));
    assert_eq!(committed_offset(&mut raw)?, 7);

    // An abort with nothing open ends too; a commit is misuse; an epoch
    // from before is fenced.
    assert_eq!(end(&mut raw, e3, true)?.0, E::InvalidTxnState.code());
    assert_eq!(end(&mut raw, e3, false)?, (0, pid, e3 + 1));
    assert_eq!(end(&mut raw, e1, false)?.0, E::ProducerFenced.code());

    assert_eq!(
        read_all(&bootstrap, "tv2", 2, "read_committed")?,
        ["first", "third"]
    );
    assert_eq!(
        read_all(&bootstrap, "tv2", 2, "read_uncommitted")?,
        ["aborted", "first", "third"]
    );
    Ok(())
}
