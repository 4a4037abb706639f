//! Share groups (KIP-932, issue 12) against a real broker: members join
//! with ShareGroupHeartbeat, acquire records with ShareFetch and
//! acknowledge them with ShareFetch or ShareAcknowledge, over TCP at the
//! versions librdkafka's share consumer sends. The bundled librdkafka has
//! no share consumer, so the member side is built on the kafka-protocol
//! codecs (weir-client's `Connection`); records are produced by librdkafka.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use common::Broker;
use common::cli::{weir, weir_ok};
use common::raw::RawClient;
use common::share::{
    ACCEPT, Got, Member, REJECT, RELEASE, RENEW, VERSION, VERSION_RENEW, acquired, alter_start,
    delete_offsets,
};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, DeleteGroupsRequest, DescribeGroupsRequest, GroupId,
    ListGroupsRequest, ShareFetchRequest, ShareGroupDescribeRequest, ShareGroupHeartbeatRequest,
    TopicName,
};
use kafka_protocol::protocol::StrBytes;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use uuid::Uuid;

/// Kafka error codes.
const UNKNOWN_MEMBER_ID: i16 = 25;
const FENCED_MEMBER_EPOCH: i16 = 110;
const INVALID_RECORD_STATE: i16 = 121;
const SHARE_SESSION_NOT_FOUND: i16 = 122;
const INVALID_SHARE_SESSION_EPOCH: i16 = 123;
const GROUP_ID_NOT_FOUND: i16 = 69;
const NON_EMPTY_GROUP: i16 = 68;
const UNKNOWN_TOPIC_ID: i16 = 100;
const INVALID_REQUEST: i16 = 42;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const WAIT: Duration = Duration::from_secs(60);

fn str(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

/// A broker with share groups on, and the lock duration given.
fn broker(lock_ms: u64) -> anyhow::Result<Broker> {
    Broker::start(&[
        "--set",
        "group.share.enable=true",
        "--set",
        &format!("group.share.record.lock.duration.ms={lock_ms}"),
    ])
}

/// Produce `values` to partition 0 of `topic` with librdkafka, and wait
/// until every one is acknowledged.
fn produce(bootstrap: &str, topic: &str, values: &[String]) -> anyhow::Result<()> {
    let mut config = common::producer_config(bootstrap);
    config.set("linger.ms", "5");
    let producer: BaseProducer = config.create()?;
    for v in values {
        producer
            .send(
                BaseRecord::<(), str>::to(topic)
                    .partition(0)
                    .payload(v.as_str()),
            )
            .map_err(|(e, _)| anyhow::anyhow!("send: {e}"))?;
    }
    producer
        .flush(Duration::from_secs(30))
        .context("flush did not complete")?;
    Ok(())
}

fn values(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("record-{i}")).collect()
}

#[test]
fn two_members_on_one_partition_get_distinct_records_and_together_all() -> anyhow::Result<()> {
    let broker = broker(30_000)?;
    let bootstrap = broker.bootstrap();
    common::create_topic_blocking(&bootstrap, "work", 1, &[])?;
    let mut a = Member::join(&bootstrap, "workers", "work")?;
    let mut b = Member::join(&bootstrap, "workers", "work")?;
    // Both are assigned the one partition: members share it.
    assert_eq!(a.heartbeat(None)?.0, 0);
    assert_eq!(b.heartbeat(None)?.0, 0);
    let produced = values(0..2_000);
    produce(&bootstrap, "work", &produced)?;
    let mut seen: BTreeMap<i64, (String, &'static str)> = BTreeMap::new();
    let mut acks: BTreeMap<&'static str, Vec<(i64, i64, i8)>> = BTreeMap::new();
    let deadline = Instant::now() + WAIT;
    while seen.len() < produced.len() {
        if Instant::now() > deadline {
            bail!("only {} of {} records acquired", seen.len(), produced.len());
        }
        for (name, m) in [("a", &mut a), ("b", &mut b)] {
            let pending = acks.remove(name).unwrap_or_default();
            for got in m.fetch(&pending, 200)? {
                assert_eq!(got.delivery_count, 1, "{got:?}");
                if let Some((_, other)) = seen.insert(got.offset, (got.value.clone(), name)) {
                    bail!("offset {} acquired by {other} and {name}", got.offset);
                }
                acks.entry(name)
                    .or_default()
                    .push((got.offset, got.offset, ACCEPT));
            }
        }
    }
    let got: Vec<String> = seen.values().map(|(v, _)| v.clone()).collect();
    assert_eq!(got, produced);
    let by_a = seen.values().filter(|(_, who)| *who == "a").count();
    assert!(
        by_a > 0 && by_a < produced.len(),
        "a got {by_a}: both members must get records"
    );
    // The last acknowledgements, then nothing is left to acquire.
    for (name, m) in [("a", &mut a), ("b", &mut b)] {
        let (top, partition) = m.acknowledge(&acks.remove(name).unwrap_or_default())?;
        assert_eq!((top, partition), (0, 0), "{name}");
        assert!(m.fetch(&[], 100)?.is_empty(), "{name}");
    }
    Ok(())
}

#[test]
fn one_fetch_acquires_up_to_max_records_across_many_small_batches() -> anyhow::Result<()> {
    let broker = broker(30_000)?;
    let bootstrap = broker.bootstrap();
    common::create_topic_blocking(&bootstrap, "small-batches", 1, &[])?;
    let mut member = Member::join(&bootstrap, "small", "small-batches")?;
    assert_eq!(member.heartbeat(None)?.0, 0);
    // 40 batches of 10 records: each produce ends with a flush.
    let produced = values(0..400);
    for chunk in produced.chunks(10) {
        produce(&bootstrap, "small-batches", chunk)?;
    }
    // ShareFetch v1 has no per-partition byte limit: the fetch's own
    // limits (500 records, 4 MiB) bound it, so one fetch takes all 400.
    let got = member.fetch(&[], 1_000)?;
    let offsets: Vec<i64> = got.iter().map(|g| g.offset).collect();
    assert_eq!(offsets, (0..400).collect::<Vec<i64>>());
    let values: Vec<String> = got.into_iter().map(|g| g.value).collect();
    assert_eq!(values, produced);
    Ok(())
}

#[test]
fn records_of_a_member_that_stops_are_redelivered_after_the_lock_with_the_count_raised()
-> anyhow::Result<()> {
    let broker = broker(1_000)?;
    let bootstrap = broker.bootstrap();
    common::create_topic_blocking(&bootstrap, "jobs", 1, &[])?;
    let mut gone = Member::join(&bootstrap, "crew", "jobs")?;
    let mut stays = Member::join(&bootstrap, "crew", "jobs")?;
    gone.heartbeat(None)?;
    stays.heartbeat(None)?;
    produce(&bootstrap, "jobs", &values(0..10))?;
    let held = gone.fetch_until(10)?;
    assert_eq!(held.len(), 10, "{held:?}");
    // The member goes silent while holding every record: the other sees
    // none until the locks expire, then all of them, delivered twice.
    let started = Instant::now();
    let mut again = Vec::new();
    while again.len() < 10 {
        anyhow::ensure!(started.elapsed() < WAIT, "redelivered only {again:?}");
        again.extend(stays.fetch(&[], 500)?);
    }
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "redelivered before the lock expired"
    );
    let offsets: Vec<i64> = again.iter().map(|g| g.offset).collect();
    assert_eq!(offsets, (0..10).collect::<Vec<i64>>());
    assert!(again.iter().all(|g| g.delivery_count == 2), "{again:?}");
    // The silent member's late acknowledgement is refused, and changes nothing.
    assert_eq!(
        gone.acknowledge(&[(0, 0, ACCEPT)])?,
        (0, INVALID_RECORD_STATE)
    );
    // A release makes a record available again at once, counted once more.
    let (_, partition) = stays.acknowledge(&[(3, 3, RELEASE)])?;
    assert_eq!(partition, 0);
    let third = stays.fetch(&[(0, 2, ACCEPT), (4, 9, ACCEPT)], 5_000)?;
    assert_eq!(
        third,
        [Got {
            offset: 3,
            value: "record-3".into(),
            delivery_count: 3
        }]
    );
    Ok(())
}

/// A renew-only ShareFetch (version 2's `is_renew_ack`): it asks for
/// nothing, so every limit is 0 (`max_bytes` defaults to `i32::MAX`).
fn renew_fetch(r: ShareFetchRequest) -> ShareFetchRequest {
    r.with_is_renew_ack(true)
        .with_max_wait_ms(0)
        .with_min_bytes(0)
        .with_max_bytes(0)
        .with_max_records(0)
}

#[test]
fn a_member_that_renews_its_locks_keeps_its_records_past_the_lock_duration() -> anyhow::Result<()> {
    const LOCK_MS: u64 = 2_000;
    let broker = broker(LOCK_MS)?;
    let bootstrap = broker.bootstrap();
    common::create_topic_blocking(&bootstrap, "jobs", 1, &[])?;
    let mut slow = Member::join(&bootstrap, "crew", "jobs")?;
    let mut other = Member::join(&bootstrap, "crew", "jobs")?;
    slow.heartbeat(None)?;
    other.heartbeat(None)?;
    produce(&bootstrap, "jobs", &values(0..3))?;
    let held = slow.fetch_until(3)?;
    assert_eq!(held.len(), 3, "{held:?}");
    // The slow member renews its locks, in turn with ShareAcknowledge and
    // with a renew fetch, for two and a half lock durations: the other
    // member, asking all the while, gets none of its records.
    let started = Instant::now();
    let mut renewals = 0;
    while started.elapsed() < Duration::from_millis(LOCK_MS * 5 / 2) {
        assert_eq!(
            other.fetch(&[], 400)?,
            [],
            "renewed records went to another member"
        );
        if renewals % 2 == 0 {
            let r = slow.acknowledge_raw(&[(0, 2, RENEW)], true, VERSION_RENEW)?;
            let errors: Vec<i16> = r.responses[0]
                .partitions
                .iter()
                .map(|p| p.error_code)
                .collect();
            assert_eq!((r.error_code, errors), (0, vec![0]));
            assert_eq!(r.acquisition_lock_timeout_ms, LOCK_MS as i32);
        } else {
            let r = slow.fetch_shaped(&[(0, 2, RENEW)], renew_fetch, VERSION_RENEW)?;
            assert_eq!(acquired(&r)?, [], "a renew fetch acquires nothing");
        }
        renewals += 1;
    }
    // A renewal is not a delivery: the record released now comes back
    // counted twice, not once per renewal.
    let (_, partition) = slow.acknowledge(&[(0, 1, ACCEPT), (2, 2, RELEASE)])?;
    assert_eq!(partition, 0);
    let again = other.fetch_until(1)?;
    assert_eq!(
        again,
        [Got {
            offset: 2,
            value: "record-2".into(),
            delivery_count: 2
        }]
    );
    // Only the holder renews, and only at version 2: version 1 knows no
    // type 4.
    let r = slow.acknowledge_raw(&[(2, 2, RENEW)], true, VERSION_RENEW)?;
    assert_eq!(
        r.responses[0].partitions[0].error_code,
        INVALID_RECORD_STATE
    );
    assert_eq!(other.acknowledge(&[(2, 2, RENEW)])?, (0, INVALID_REQUEST));
    // A renew fetch that asks for records, or an acquire mode that is
    // neither 0 nor 1, is refused whole.
    let asking = |r: ShareFetchRequest| renew_fetch(r).with_max_records(10);
    let r = other.fetch_shaped(&[(2, 2, RENEW)], asking, VERSION_RENEW)?;
    assert_eq!(r.error_code, INVALID_REQUEST);
    let odd_mode = |r: ShareFetchRequest| r.with_max_records(10).with_share_acquire_mode(7);
    assert_eq!(
        other.fetch_shaped(&[], odd_mode, VERSION_RENEW)?.error_code,
        INVALID_REQUEST
    );
    // The holder still has it, renewed with a ShareFetch at version 2
    // that also asks for more (record-limit mode: at most 2 of 5 new).
    produce(&bootstrap, "jobs", &values(3..8))?;
    let limited = |r: ShareFetchRequest| {
        r.with_max_wait_ms(5_000)
            .with_min_bytes(1)
            .with_max_bytes(1 << 20)
            .with_max_records(2)
            .with_batch_size(2)
            .with_share_acquire_mode(1)
    };
    let r = other.fetch_shaped(&[(2, 2, RENEW)], limited, VERSION_RENEW)?;
    let offsets: Vec<i64> = acquired(&r)?.iter().map(|g| g.offset).collect();
    assert_eq!(offsets, [3, 4]);
    Ok(())
}

#[test]
fn bad_members_sessions_and_acknowledgements_get_kafkas_errors() -> anyhow::Result<()> {
    let broker = broker(30_000)?;
    let bootstrap = broker.bootstrap();
    common::create_topic_blocking(&bootstrap, "t", 1, &[])?;
    common::create_topic_blocking(&bootstrap, "plain", 1, &[])?;
    let mut a = Member::join(&bootstrap, "g", "t")?;
    let mut b = Member::join(&bootstrap, "g", "t")?;
    a.heartbeat(None)?;
    b.heartbeat(None)?;
    produce(&bootstrap, "t", &values(0..3))?;
    let got = a.fetch_until(3)?;
    assert_eq!(got.len(), 3, "{got:?}");

    // Heartbeats: a stale epoch is fenced; an unknown member is unknown.
    let epoch = a.epoch;
    a.epoch = epoch + 5;
    assert_eq!(a.heartbeat(None)?.0, FENCED_MEMBER_EPOCH);
    a.epoch = epoch;
    let mut stranger = Member::join(&bootstrap, "g2", "t")?;
    stranger.group = "g".into();
    stranger.epoch = 3;
    stranger.id = Uuid::new_v4().to_string();
    assert_eq!(stranger.heartbeat(None)?.0, UNKNOWN_MEMBER_ID);

    // Acknowledgements: records `b` never acquired, and offsets past the end.
    b.fetch(&[], 0)?;
    assert_eq!(b.acknowledge(&[(0, 0, ACCEPT)])?, (0, INVALID_RECORD_STATE));
    assert_eq!(
        a.acknowledge(&[(50, 50, ACCEPT)])?,
        (0, INVALID_RECORD_STATE)
    );
    // Nothing changed: `a` still holds all three and may accept them.
    assert_eq!(a.acknowledge(&[(0, 2, ACCEPT)])?, (0, 0));

    // Sessions: an unknown one, and a wrong epoch.
    let mut no_session = Member::join(&bootstrap, "g", "t")?;
    no_session.heartbeat(None)?;
    no_session.session_epoch = 4;
    let r = no_session.fetch_raw(&[], 0)?;
    assert_eq!(r.error_code, SHARE_SESSION_NOT_FOUND);
    a.session_epoch += 7;
    let r = a.fetch_raw(&[], 0)?;
    assert_eq!(r.error_code, INVALID_SHARE_SESSION_EPOCH);
    assert_eq!(a.acknowledge(&[])?.0, INVALID_SHARE_SESSION_EPOCH);

    // A partition of a topic that does not exist gets Kafka's error.
    let mut lost = Member::join(&bootstrap, "g", "t")?;
    lost.topic_id = Some(Uuid::new_v4());
    let r = lost.fetch_raw(&[], 1_000)?;
    let p = r
        .responses
        .iter()
        .flat_map(|t| t.partitions.iter())
        .next()
        .context("no partition answered")?;
    assert_eq!(p.error_code, UNKNOWN_TOPIC_ID);

    // A consumer group's id is not a share group's, and the other way round.
    let mut described = RawClient::connect(&bootstrap)?;
    let r = described.call(
        &ShareGroupDescribeRequest::default()
            .with_group_ids(vec![GroupId(str("g")), GroupId(str("nope"))]),
        VERSION,
    )?;
    assert_eq!(r.groups[0].error_code, 0);
    assert_eq!(r.groups[0].members.len(), 4);
    assert_eq!(r.groups[1].error_code, GROUP_ID_NOT_FOUND);
    // DescribeGroups and ListGroups show it as a share group.
    let r = described.call(
        &DescribeGroupsRequest::default().with_groups(vec![GroupId(str("g"))]),
        5,
    )?;
    let g = &r.groups[0];
    assert_eq!((g.error_code, g.protocol_type.as_str()), (0, "share"));
    assert_eq!(g.members.len(), 4);
    let r = described.call(
        &ListGroupsRequest::default().with_types_filter(vec![str("share")]),
        5,
    )?;
    let listed: Vec<(&str, &str)> = r
        .groups
        .iter()
        .map(|g| (g.group_id.as_str(), g.group_type.as_str()))
        .collect();
    assert_eq!(listed, [("g", "share"), ("g2", "share")]);
    Ok(())
}

#[test]
fn without_group_share_enable_the_share_apis_are_neither_advertised_nor_served()
-> anyhow::Result<()> {
    let broker = Broker::start(&[])?;
    let mut conn = RawClient::connect(&broker.bootstrap())?;
    let r = conn.call(&ApiVersionsRequest::default(), 3)?;
    let share_apis = [
        ApiKey::ShareGroupHeartbeat,
        ApiKey::ShareFetch,
        ApiKey::ShareAcknowledge,
        ApiKey::ShareGroupDescribe,
        ApiKey::DescribeShareGroupOffsets,
        ApiKey::AlterShareGroupOffsets,
        ApiKey::DeleteShareGroupOffsets,
    ];
    for key in share_apis {
        assert!(
            !r.api_keys.iter().any(|k| k.api_key == key as i16),
            "{key:?} advertised"
        );
    }
    assert!(
        !r.finalized_features
            .iter()
            .any(|f| f.name.as_str() == "share.version")
    );
    // A share API sent anyway closes the connection, as any API not served.
    let sent = conn.call(
        &ShareGroupHeartbeatRequest::default()
            .with_group_id(GroupId(str("g")))
            .with_member_id(str("m"))
            .with_subscribed_topic_names(Some(vec![TopicName(str("t"))])),
        VERSION,
    );
    assert!(sent.is_err(), "a share heartbeat was answered: {sent:?}");
    // With it, they are, and share.version 1 is finalized.
    let shared = self::broker(30_000)?;
    let mut conn = RawClient::connect(&shared.bootstrap())?;
    let r = conn.call(&ApiVersionsRequest::default(), 3)?;
    // Version 2 of ShareFetch and ShareAcknowledge renews locks (KIP-1222).
    let versions = [
        (ApiKey::ShareGroupHeartbeat, (1, 1)),
        (ApiKey::ShareFetch, (1, 2)),
        (ApiKey::ShareAcknowledge, (1, 2)),
    ];
    for (key, range) in versions {
        let listed = r.api_keys.iter().find(|k| k.api_key == key as i16);
        assert_eq!(
            listed.map(|k| (k.min_version, k.max_version)),
            Some(range),
            "{key:?}"
        );
    }
    for key in share_apis {
        assert!(
            r.api_keys.iter().any(|k| k.api_key == key as i16),
            "{key:?} not advertised"
        );
    }
    let feature = r
        .finalized_features
        .iter()
        .find(|f| f.name.as_str() == "share.version");
    assert_eq!(feature.map(|f| f.max_version_level), Some(1));
    Ok(())
}

#[test]
fn acknowledged_records_stay_done_across_a_sigkill_and_the_rest_come_back_counted()
-> anyhow::Result<()> {
    let mut broker = broker(30_000)?;
    let bootstrap = broker.bootstrap();
    common::create_topic_blocking(&bootstrap, "orders", 1, &[])?;
    let mut m = Member::join(&bootstrap, "billing", "orders")?;
    // Produced after the assignment and before any fetch: the
    // share-partition started at the high watermark of the assignment, and
    // that start was durable before the member heard of it.
    produce(&bootstrap, "orders", &values(0..10))?;
    broker.sigkill()?;
    broker.restart()?;
    let mut m2 = Member::join(&bootstrap, "billing", "orders")?;
    let got = m2.fetch_until(10)?;
    assert_eq!(got.len(), 10, "{got:?}");
    assert!(got.iter().all(|g| g.delivery_count == 1), "{got:?}");
    // Accept 0..=4 and release 5; hold 6..=9. Killed right after the answer.
    assert_eq!(m2.acknowledge(&[(0, 4, ACCEPT), (5, 5, RELEASE)])?, (0, 0));
    broker.sigkill()?;
    broker.restart()?;
    m.rejoin(&bootstrap, "orders")?;
    let mut again = Vec::new();
    let deadline = Instant::now() + WAIT;
    while again.len() < 5 {
        anyhow::ensure!(
            Instant::now() < deadline,
            "after the restart only {again:?}"
        );
        again.extend(m.fetch(&[], 1_000)?);
    }
    let offsets: Vec<i64> = again.iter().map(|g| g.offset).collect();
    assert_eq!(
        offsets,
        [5, 6, 7, 8, 9],
        "accepted records came back: {again:?}"
    );
    // Each was delivered once before: the count survived the restart.
    assert!(again.iter().all(|g| g.delivery_count == 2), "{again:?}");
    Ok(())
}

#[test]
fn a_deleted_share_group_takes_its_progress_with_it() -> anyhow::Result<()> {
    let mut broker = broker(30_000)?;
    let bootstrap = broker.bootstrap();
    common::create_topic_blocking(&bootstrap, "mail", 1, &[])?;
    let mut m = Member::join(&bootstrap, "senders", "mail")?;
    produce(&bootstrap, "mail", &values(0..5))?;
    assert_eq!(m.fetch_until(5)?.len(), 5);
    assert_eq!(m.acknowledge(&[(0, 2, ACCEPT)])?, (0, 0));
    let mut admin = RawClient::connect(&bootstrap)?;
    let delete = DeleteGroupsRequest::default().with_groups_names(vec![GroupId(str("senders"))]);
    // Not while it has a member.
    let r = admin.call(&delete, 2)?;
    assert_eq!(r.results[0].error_code, NON_EMPTY_GROUP);
    m.epoch = -1;
    assert_eq!(m.heartbeat(None)?.0, 0);
    assert_eq!(m.acknowledge(&[])?.0, 0);
    let r = admin.call(&delete, 2)?;
    assert_eq!(r.results[0].error_code, 0);
    broker.restart()?;
    // A new group of the same id starts at the high watermark, not where
    // the deleted one stopped (3, with 3 and 4 delivered once).
    let mut fresh = Member::join(&bootstrap, "senders", "mail")?;
    produce(&bootstrap, "mail", &values(5..10))?;
    let mut got = Vec::new();
    let deadline = Instant::now() + WAIT;
    while got.len() < 5 {
        anyhow::ensure!(Instant::now() < deadline, "only {got:?}");
        got.extend(fresh.fetch(&[], 1_000)?);
    }
    let offsets: Vec<i64> = got.iter().map(|g| g.offset).collect();
    assert_eq!(offsets, [5, 6, 7, 8, 9]);
    assert!(got.iter().all(|g| g.delivery_count == 1), "{got:?}");
    Ok(())
}

#[test]
fn group_configs_set_with_weir_group_config_change_what_the_share_group_does() -> anyhow::Result<()>
{
    let broker = broker(30_000)?;
    let bootstrap = broker.bootstrap();
    common::create_topic_blocking(&bootstrap, "cfg", 1, &[])?;
    // Produced before the group exists: only `earliest` delivers them.
    produce(&bootstrap, "cfg", &values(0..3))?;
    weir_ok(
        &broker,
        &[
            "group",
            "config",
            "set",
            "cfgs",
            "share.auto.offset.reset=earliest",
            "share.record.lock.duration.ms=1000",
            "share.delivery.count.limit=2",
        ],
        b"",
    )?;
    let got: serde_json::Value = serde_json::from_str(&weir_ok(
        &broker,
        &["group", "config", "get", "cfgs", "--json"],
        b"",
    )?)?;
    let config = |name: &str| {
        got["configs"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["name"] == name))
            .map(|c| (c["value"].to_string(), c["source"].to_string()))
    };
    assert_eq!(
        config("share.delivery.count.limit"),
        Some(("\"2\"".into(), "\"group\"".into()))
    );
    assert_eq!(
        config("share.auto.offset.reset"),
        Some(("\"earliest\"".into(), "\"group\"".into()))
    );
    assert_eq!(
        config("share.record.lock.duration.ms"),
        Some(("\"1000\"".into(), "\"group\"".into()))
    );
    assert_eq!(
        config("weir.share.redelivery.backoff.ms"),
        Some(("\"\"".into(), "\"default\"".into()))
    );
    // A wrong value is refused whole, naming the config; nothing changes.
    let refused = weir(
        &broker,
        &[
            "group",
            "config",
            "set",
            "cfgs",
            "share.record.lock.duration.ms=5000",
            "share.delivery.count.limit=11",
        ],
        b"",
    )?;
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("share.delivery.count.limit"), "{stderr}");

    let mut m = Member::join(&bootstrap, "cfgs", "cfg")?;
    let first = m.fetch_raw(&[], 5_000)?;
    assert_eq!(first.acquisition_lock_timeout_ms, 1_000);
    let mut held: Vec<i64> = first
        .responses
        .iter()
        .flat_map(|t| t.partitions.iter())
        .flat_map(|p| p.acquired_records.iter())
        .flat_map(|a| a.first_offset..=a.last_offset)
        .collect();
    held.extend(m.fetch_until(3 - held.len())?.into_iter().map(|g| g.offset));
    held.sort_unstable();
    assert_eq!(held, [0, 1, 2]);
    // The group's 1 s lock, not the broker's 30 s: the records come back
    // on their second (and last) delivery.
    let again = m.fetch_until(3)?;
    assert!(again.iter().all(|g| g.delivery_count == 2), "{again:?}");
    // Released at the group's delivery count limit, they are given up on.
    let released = m.fetch(&[(0, 2, RELEASE)], 1_000)?;
    assert!(released.is_empty(), "{released:?}");
    // Deleting the group's configs brings the broker's defaults back.
    weir_ok(
        &broker,
        &[
            "group",
            "config",
            "delete",
            "cfgs",
            "share.record.lock.duration.ms",
        ],
        b"",
    )?;
    assert_eq!(m.fetch_raw(&[], 0)?.acquisition_lock_timeout_ms, 30_000);
    Ok(())
}

/// A dead letter as `weir consume --format json` prints it: the record's
/// `__dlq.errors.*` headers by name (without the prefix), and its value.
#[derive(Debug)]
struct Dead {
    headers: BTreeMap<String, String>,
    value: serde_json::Value,
}

impl Dead {
    fn offset(&self) -> i64 {
        self.headers
            .get("offset")
            .and_then(|o| o.parse().ok())
            .unwrap_or(-1)
    }
}

/// Every record of `topic` read with `weir consume` (none when it does not
/// exist yet).
fn dead_letters(broker: &Broker, topic: &str) -> anyhow::Result<Vec<Dead>> {
    let out = weir(
        broker,
        &["consume", topic, "--from-beginning", "--format", "json"],
        b"",
    )?;
    if !out.status.success() {
        return Ok(Vec::new());
    }
    let mut found = Vec::new();
    for line in String::from_utf8(out.stdout)?.lines() {
        let r: serde_json::Value = serde_json::from_str(line)?;
        let mut headers = BTreeMap::new();
        for h in r["headers"].as_array().into_iter().flatten() {
            let key = h["key"].as_str().unwrap_or_default();
            if let Some(name) = key.strip_prefix("__dlq.errors.") {
                let value = h["value"].as_str().unwrap_or_default().to_string();
                headers.insert(name.to_string(), value);
            }
        }
        found.push(Dead {
            headers,
            value: r["value"].clone(),
        });
    }
    Ok(found)
}

/// Read `topic` until it holds at least `n` records.
fn wait_for_dead_letters(broker: &Broker, topic: &str, n: usize) -> anyhow::Result<Vec<Dead>> {
    let deadline = Instant::now() + WAIT;
    loop {
        let found = dead_letters(broker, topic)?;
        if found.len() >= n {
            return Ok(found);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{topic} holds only {found:?}, not {n} records"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn rejected_and_exhausted_records_land_once_in_the_groups_dead_letter_topic_with_kafkas_headers()
-> anyhow::Result<()> {
    let broker = broker(30_000)?;
    let bootstrap = broker.bootstrap();
    common::create_topic_blocking(&bootstrap, "orders", 1, &[])?;
    let mut m = Member::join(&bootstrap, "orders-workers", "orders")?;
    produce(&bootstrap, "orders", &values(0..3))?;
    assert_eq!(m.fetch_until(3)?.len(), 3);
    // 0 is rejected, 2 accepted, 1 released until it reaches the delivery
    // count limit (the broker's default, 5).
    let mut acks = vec![(0, 0, REJECT), (1, 1, RELEASE), (2, 2, ACCEPT)];
    for delivery in 2..=5 {
        let got = m.fetch(&acks, 5_000)?;
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!((got[0].offset, got[0].delivery_count), (1, delivery));
        acks = vec![(1, 1, RELEASE)];
    }
    assert_eq!(m.acknowledge(&acks)?, (0, 0));
    // The default dead-letter topic, dlq.<group>, was created for them.
    let dead = wait_for_dead_letters(&broker, "dlq.orders-workers", 2)?;
    let mut by_offset: BTreeMap<i64, &Dead> = BTreeMap::new();
    for d in &dead {
        assert!(by_offset.insert(d.offset(), d).is_none(), "twice: {dead:?}");
    }
    assert_eq!(by_offset.keys().copied().collect::<Vec<_>>(), [0, 1]);
    let expect = |d: &Dead, count: &str, message: &str| {
        let want: BTreeMap<String, String> = [
            ("topic", "orders"),
            ("partition", "0"),
            ("offset", &d.offset().to_string()),
            ("group", "orders-workers"),
            ("delivery.count", count),
            ("message", message),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(d.headers, want);
        // Without errors.deadletterqueue.copy.record.enable, no copy.
        assert_eq!(d.value, serde_json::Value::Null);
    };
    expect(by_offset[&0], "1", "Offset rejected by client.");
    expect(
        by_offset[&1],
        "5",
        "Offset delivery count exceeded the threshold.",
    );
    // With the copy on, a dead letter carries the record.
    weir_ok(
        &broker,
        &[
            "group",
            "config",
            "set",
            "orders-workers",
            "errors.deadletterqueue.copy.record.enable=true",
        ],
        b"",
    )?;
    produce(&bootstrap, "orders", &values(3..4))?;
    let got = m.fetch_until(1)?;
    assert_eq!(got[0].offset, 3);
    assert_eq!(m.acknowledge(&[(3, 3, REJECT)])?, (0, 0));
    let dead = wait_for_dead_letters(&broker, "dlq.orders-workers", 3)?;
    assert_eq!(dead.len(), 3, "{dead:?}");
    assert_eq!(dead[2].offset(), 3);
    assert_eq!(dead[2].value, serde_json::json!("record-3"));
    // A topic not made for dead letters is refused as the group's.
    let refused = weir(
        &broker,
        &[
            "group",
            "config",
            "set",
            "orders-workers",
            "errors.deadletterqueue.topic.name=orders",
        ],
        b"",
    )?;
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("dlq."), "{stderr}");
    Ok(())
}

#[test]
fn a_record_whose_last_lock_expires_is_dead_lettered_without_another_fetch() -> anyhow::Result<()> {
    let broker = broker(30_000)?;
    let bootstrap = broker.bootstrap();
    common::create_topic_blocking(&bootstrap, "jobs", 1, &[])?;
    weir_ok(
        &broker,
        &[
            "group",
            "config",
            "set",
            "runners",
            "share.delivery.count.limit=2",
            "share.record.lock.duration.ms=1000",
            "errors.deadletterqueue.topic.name=dlq.jobs-failed",
        ],
        b"",
    )?;
    let mut m = Member::join(&bootstrap, "runners", "jobs")?;
    produce(&bootstrap, "jobs", &values(0..1))?;
    assert_eq!(m.fetch_until(1)?[0].delivery_count, 1);
    let again = m.fetch(&[(0, 0, RELEASE)], 5_000)?;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].delivery_count, 2);
    // The member now holds its last delivery and never fetches again: the
    // lock expires on the broker's own clock.
    let dead = wait_for_dead_letters(&broker, "dlq.jobs-failed", 1)?;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].offset(), 0);
    assert_eq!(dead[0].headers["delivery.count"], "2");
    assert_eq!(
        dead[0].headers["message"],
        "Offset delivery count exceeded the threshold."
    );
    Ok(())
}

/// Reject offset 0 (and accept 1) with the dead-letter writer paused at
/// `failpoint`, SIGKILL the broker there, and check that after the
/// restart the record's dead letter is written once.
#[cfg(feature = "failpoints")]
fn killed_at(failpoint: &str, written_before_kill: bool) -> anyhow::Result<()> {
    let group = "killed";
    let mut broker = Broker::start_with_env(
        "127.0.0.1:0",
        &[
            "--set",
            "group.share.enable=true",
            // With a window of two records, record 2 is acquired only once
            // record 0's dead letter is confirmed.
            "--set",
            "group.share.partition.max.record.locks=2",
        ],
        &[("FAILPOINTS", &format!("{failpoint}=pause"))],
    )?;
    let bootstrap = broker.bootstrap();
    common::create_topic_blocking(&bootstrap, "work", 1, &[])?;
    let mut m = Member::join(&bootstrap, group, "work")?;
    produce(&bootstrap, "work", &values(0..3))?;
    assert_eq!(m.fetch_until(2)?.len(), 2);
    // Answered once the dead-lettering state is durable.
    assert_eq!(m.acknowledge(&[(0, 0, REJECT), (1, 1, ACCEPT)])?, (0, 0));
    let dlq = format!("dlq.{group}");
    if written_before_kill {
        assert_eq!(wait_for_dead_letters(&broker, &dlq, 1)?.len(), 1);
    }
    broker.sigkill()?;
    broker.set_envs(&[]);
    broker.restart()?;
    m.rejoin(&bootstrap, "work")?;
    // Record 2 comes only after record 0's dead letter is confirmed.
    let got = m.fetch_until(1)?;
    assert_eq!(got[0].offset, 2, "{got:?}");
    let dead = dead_letters(&broker, &dlq)?;
    let offsets: Vec<i64> = dead.iter().map(Dead::offset).collect();
    assert_eq!(offsets, [0], "{dead:?}");
    Ok(())
}

#[cfg(feature = "failpoints")]
#[test]
fn a_sigkill_between_the_dead_letter_and_its_confirmation_writes_it_once() -> anyhow::Result<()> {
    killed_at("share::dead_letters_appended", true)
}

#[cfg(feature = "failpoints")]
#[test]
fn a_sigkill_before_the_dead_letter_is_written_writes_it_once_after_the_restart()
-> anyhow::Result<()> {
    killed_at("share::dead_letters_appending", false)
}

/// The acknowledgements for `got`: records whose value starts with
/// `reject-` are rejected, the others accepted (and added to `accepted`).
fn reject_or_accept(got: &[Got], accepted: &mut Vec<i64>) -> Vec<(i64, i64, i8)> {
    got.iter()
        .map(|g| {
            let keep = !g.value.starts_with("reject-");
            if keep {
                accepted.push(g.offset);
            }
            (g.offset, g.offset, if keep { ACCEPT } else { REJECT })
        })
        .collect()
}

/// Fetch from `topic` as a member of `group` on a connection of its own,
/// acknowledging with [`reject_or_accept`], until the broker goes away;
/// `acked` counts the acknowledgements answered.
fn consume_in_background(
    bootstrap: String,
    group: &'static str,
    topic: &'static str,
    acked: std::sync::Arc<std::sync::atomic::AtomicUsize>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let Ok(mut m) = Member::join(&bootstrap, group, topic) else {
            return;
        };
        let mut acks: Vec<(i64, i64, i8)> = Vec::new();
        while let Ok(got) = m.fetch(&acks, 200) {
            acked.fetch_add(acks.len(), std::sync::atomic::Ordering::SeqCst);
            acks = reject_or_accept(&got, &mut Vec::new());
        }
    })
}

#[test]
fn sigkills_at_random_points_while_records_are_rejected_lose_no_dead_letter_and_duplicate_none()
-> anyhow::Result<()> {
    const ROUNDS: i64 = 5;
    const PER_ROUND: i64 = 300;
    const REJECTED: i64 = ROUNDS * PER_ROUND;
    const WINDOW: i64 = 10;
    let mut broker = Broker::start(&[
        "--set",
        "group.share.enable=true",
        // The last of the records after the rejected ones is acquired only
        // once the start offset has passed every rejected record: once
        // each dead letter is confirmed.
        "--set",
        &format!("group.share.partition.max.record.locks={WINDOW}"),
    ])?;
    let bootstrap = broker.bootstrap();
    common::create_topic_blocking(&bootstrap, "payments", 1, &[])?;
    weir_ok(
        &broker,
        &[
            "group",
            "config",
            "set",
            "payers",
            "share.auto.offset.reset=earliest",
        ],
        b"",
    )?;
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_nanos() as u64
        | 1;
    eprintln!("kill times seeded with {seed}");
    let mut rng = seed;
    let mut next = move |below: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % below
    };
    for round in 0..ROUNDS {
        let rejected: Vec<String> = (round * PER_ROUND..(round + 1) * PER_ROUND)
            .map(|i| format!("reject-{i}"))
            .collect();
        produce(&bootstrap, "payments", &rejected)?;
        let acked = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let consumer =
            consume_in_background(bootstrap.clone(), "payers", "payments", acked.clone());
        // Killed at a random point of the round's work.
        let target = 1 + next(PER_ROUND as u64 - 20) as usize;
        let deadline = Instant::now() + WAIT;
        while acked.load(std::sync::atomic::Ordering::SeqCst) < target {
            anyhow::ensure!(Instant::now() < deadline, "the consumer made no progress");
            std::thread::sleep(Duration::from_millis(1));
        }
        broker.sigkill()?;
        consumer
            .join()
            .map_err(|_| anyhow::anyhow!("consumer panicked"))?;
        broker.restart()?;
        let so_far = dead_letters(&broker, "dlq.payers")?.len();
        eprintln!("dead letters after a kill: {so_far}");
    }
    // Run to the end: the last of the records produced now is acquired
    // only once the start offset has passed every rejected record, each
    // dead letter confirmed.
    let kept: Vec<String> = (0..WINDOW).map(|i| format!("keep-{i}")).collect();
    produce(&bootstrap, "payments", &kept)?;
    let last = REJECTED + WINDOW - 1;
    let mut accepted = Vec::new();
    let deadline = Instant::now() + WAIT;
    let mut m = Member::join(&bootstrap, "payers", "payments")?;
    let mut acks: Vec<(i64, i64, i8)> = Vec::new();
    while !accepted.contains(&last) {
        anyhow::ensure!(
            Instant::now() < deadline,
            "seed {seed}: the last record never came"
        );
        acks = reject_or_accept(&m.fetch(&acks, 200)?, &mut accepted);
    }
    assert_eq!(m.acknowledge(&acks)?, (0, 0));
    let dead = dead_letters(&broker, "dlq.payers")?;
    let mut offsets: Vec<i64> = dead.iter().map(Dead::offset).collect();
    offsets.sort_unstable();
    let want: Vec<i64> = (0..REJECTED).collect();
    assert_eq!(offsets, want, "seed {seed}: each rejected record once");
    assert!(
        dead.iter()
            .all(|d| d.headers["message"] == "Offset rejected by client."),
        "{dead:?}"
    );
    Ok(())
}

#[test]
fn a_released_record_waits_out_the_groups_growing_backoff_before_it_comes_back()
-> anyhow::Result<()> {
    let broker = broker(30_000)?;
    let bootstrap = broker.bootstrap();
    common::create_topic_blocking(&bootstrap, "retries", 1, &[])?;
    let backoff = [500u64, 1_500];
    weir_ok(
        &broker,
        &[
            "group",
            "config",
            "set",
            "retriers",
            "weir.share.redelivery.backoff.ms=500,1500",
        ],
        b"",
    )?;
    let mut m = Member::join(&bootstrap, "retriers", "retries")?;
    produce(&bootstrap, "retries", &values(0..1))?;
    assert_eq!(m.fetch_until(1)?[0].delivery_count, 1);
    let mut acks = vec![(0, 0, RELEASE)];
    for (i, wait) in backoff.into_iter().enumerate() {
        let released = Instant::now();
        let mut got = m.fetch(&acks, 10_000)?;
        while got.is_empty() {
            anyhow::ensure!(released.elapsed() < WAIT, "never redelivered");
            got = m.fetch(&[], 10_000)?;
        }
        let after = released.elapsed();
        assert_eq!((got[0].offset, got[0].delivery_count), (0, i as i16 + 2));
        // Not before the wait for this delivery count; how late it came is
        // reported, not asserted (machines here are noisy).
        assert!(
            after >= Duration::from_millis(wait),
            "redelivered after {after:?}, before the {wait} ms backoff"
        );
        eprintln!(
            "backoff {wait} ms: redelivered after {} ms",
            after.as_millis()
        );
        acks = vec![(0, 0, RELEASE)];
    }
    Ok(())
}

#[test]
fn weir_consume_share_group_acknowledges_what_it_prints_as_told() -> anyhow::Result<()> {
    let broker = broker(30_000)?;
    let bootstrap = broker.bootstrap();
    common::create_topic_blocking(&bootstrap, "inbox", 1, &[])?;
    weir_ok(
        &broker,
        &[
            "group",
            "config",
            "set",
            "readers",
            "share.auto.offset.reset=earliest",
        ],
        b"",
    )?;
    produce(
        &bootstrap,
        "inbox",
        &["ok-0".into(), "poison-1".into(), "ok-2".into()],
    )?;
    let lines = |out: String| -> anyhow::Result<Vec<serde_json::Value>> {
        out.lines().map(|l| Ok(serde_json::from_str(l)?)).collect()
    };
    let share = [
        "consume",
        "inbox",
        "--share-group",
        "readers",
        "--format",
        "json",
    ];
    // One record, released: it comes back; the others fetched with it are
    // released too, unprinted.
    let first = lines(weir_ok(
        &broker,
        &[&share[..], &["--ack", "release", "-n", "1"]].concat(),
        b"",
    )?)?;
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!(
        (
            first[0]["offset"].as_i64(),
            first[0]["delivery_count"].as_i64()
        ),
        (Some(0), Some(1))
    );
    // Then all three, each delivered a second time; the poison rejected.
    let second = lines(weir_ok(
        &broker,
        &[&share[..], &["--reject-if", "^poison"]].concat(),
        b"",
    )?)?;
    let seen: Vec<(i64, i64, String)> = second
        .iter()
        .map(|r| {
            (
                r["offset"].as_i64().unwrap_or(-1),
                r["delivery_count"].as_i64().unwrap_or(-1),
                r["value"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (0, 2, "ok-0".to_string()),
            (1, 2, "poison-1".to_string()),
            (2, 2, "ok-2".to_string())
        ]
    );
    // Accepted and rejected: nothing is left, and the poison is dead-lettered.
    assert_eq!(weir_ok(&broker, &share, b"")?, "");
    let dead = wait_for_dead_letters(&broker, "dlq.readers", 1)?;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].offset(), 1);
    // A bad expression is a usage error (exit 2).
    let bad = weir(&broker, &[&share[..], &["--reject-if", "("]].concat(), b"")?;
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--reject-if"));
    Ok(())
}

#[test]
fn weir_dlq_redrive_moves_dead_letters_back_once_as_filtered() -> anyhow::Result<()> {
    let broker = broker(30_000)?;
    let bootstrap = broker.bootstrap();
    common::create_topic_blocking(&bootstrap, "refunds", 1, &[])?;
    weir_ok(
        &broker,
        &[
            "group",
            "config",
            "set",
            "refunders",
            "share.auto.offset.reset=earliest",
        ],
        b"",
    )?;
    produce(
        &bootstrap,
        "refunds",
        &["a".into(), "poison-b".into(), "poison-c".into()],
    )?;
    let share = ["consume", "refunds", "--share-group", "refunders"];
    assert_eq!(
        weir_ok(
            &broker,
            &[&share[..], &["--reject-if", "^poison"]].concat(),
            b""
        )?,
        "a\npoison-b\npoison-c\n"
    );
    assert_eq!(wait_for_dead_letters(&broker, "dlq.refunders", 2)?.len(), 2);
    let redrive = |extra: &[&str]| -> anyhow::Result<serde_json::Value> {
        let args = [
            &[
                "dlq",
                "redrive",
                "dlq.refunders",
                "--to",
                "refunds",
                "--json",
            ][..],
            extra,
        ]
        .concat();
        Ok(serde_json::from_str(&weir_ok(&broker, &args, b"")?)?)
    };
    // Only the dead letter of offset 1; the other is passed over for good.
    let first = redrive(&["--where", "offset=1"])?;
    assert_eq!(first["redriven"], 1, "{first}");
    assert_eq!(first["passed_over"], 1, "{first}");
    // Nothing left for a second run.
    assert_eq!(redrive(&[])?["redriven"], 0);
    // Reading it all again is a choice; a dry run moves nothing.
    let again = redrive(&["--from-beginning", "--dry-run"])?;
    assert_eq!(again["redriven"], 2, "{again}");
    // The redriven record is back in its partition, read back from the
    // original (the dead letter carried no copy), with where it came from.
    let out = weir_ok(
        &broker,
        &["consume", "refunds", "--from-beginning", "--format", "json"],
        b"",
    )?;
    let records: Vec<serde_json::Value> = out
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    assert_eq!(records.len(), 4, "{out}");
    assert_eq!(records[3]["value"], "poison-b");
    assert_eq!(
        records[3]["headers"],
        serde_json::json!([{"key": "weir.redriven-from", "value": "dlq.refunders/0/0"}])
    );
    // The share group gets it again, as a new record.
    let redelivered = weir_ok(&broker, &share, b"")?;
    assert_eq!(redelivered, "poison-b\n");
    // A --where on an unknown header is a usage error.
    let bad = weir(
        &broker,
        &[
            "dlq",
            "redrive",
            "dlq.refunders",
            "--to",
            "refunds",
            "--where",
            "colour=red",
        ],
        b"",
    )?;
    assert_eq!(bad.status.code(), Some(2));
    Ok(())
}

#[test]
fn share_group_offsets_are_described_reset_and_deleted_while_the_group_is_empty()
-> anyhow::Result<()> {
    const OFFSET_OUT_OF_RANGE: i16 = 1;
    let broker = broker(30_000)?;
    let bootstrap = broker.bootstrap();
    common::create_topic_blocking(&bootstrap, "ledger", 1, &[])?;
    let mut m = Member::join(&bootstrap, "auditors", "ledger")?;
    produce(&bootstrap, "ledger", &values(0..5))?;
    assert_eq!(m.fetch_until(5)?.len(), 5);
    assert_eq!(m.acknowledge(&[(0, 2, ACCEPT)])?, (0, 0));
    let mut admin = RawClient::connect(&bootstrap)?;
    assert_eq!(
        common::share::start_offsets(&mut admin, "auditors", None)?,
        [("ledger".to_string(), 0, 3, 0)]
    );
    // Not while a member is in the group.
    assert_eq!(
        alter_start(&mut admin, "auditors", "ledger", 1)?.0,
        NON_EMPTY_GROUP
    );
    m.epoch = -1;
    assert_eq!(m.heartbeat(None)?.0, 0);
    assert_eq!(
        alter_start(&mut admin, "auditors", "ledger", 99)?,
        (0, OFFSET_OUT_OF_RANGE)
    );
    assert_eq!(alter_start(&mut admin, "auditors", "ledger", 1)?, (0, 0));
    // A partition the topic does not have is named as such.
    assert_eq!(
        common::share::alter_start_of(&mut admin, "auditors", ("ledger", 7), 0)?,
        (0, UNKNOWN_TOPIC_OR_PARTITION)
    );
    assert_eq!(
        common::share::start_offsets(&mut admin, "auditors", Some("ledger"))?,
        [("ledger".to_string(), 0, 1, 0)]
    );
    // A member now gets 1..=4 afresh: delivered once, as new.
    m.rejoin(&bootstrap, "ledger")?;
    let got = m.fetch_until(4)?;
    let offsets: Vec<(i64, i16)> = got.iter().map(|g| (g.offset, g.delivery_count)).collect();
    assert_eq!(offsets, [(1, 1), (2, 1), (3, 1), (4, 1)]);
    m.epoch = -1;
    assert_eq!(m.heartbeat(None)?.0, 0);
    // Deleted: the group has no state for the topic any more.
    assert_eq!(delete_offsets(&mut admin, "auditors", "ledger")?, (0, 0));
    assert_eq!(
        common::share::start_offsets(&mut admin, "auditors", Some("ledger"))?,
        [("ledger".to_string(), 0, -1, 0)]
    );
    assert!(common::share::start_offsets(&mut admin, "auditors", None)?.is_empty());
    // An unknown group is named as such.
    assert!(common::share::start_offsets(&mut admin, "nobody", None).is_err());
    Ok(())
}

#[test]
fn weir_group_describe_shows_a_share_groups_members_in_flight_records_and_dead_letter_topic()
-> anyhow::Result<()> {
    let broker = broker(30_000)?;
    let bootstrap = broker.bootstrap();
    common::create_topic_blocking(&bootstrap, "tickets", 1, &[])?;
    weir_ok(
        &broker,
        &[
            "group",
            "config",
            "set",
            "support",
            "weir.share.redelivery.backoff.ms=600000",
        ],
        b"",
    )?;
    let mut m = Member::join(&bootstrap, "support", "tickets")?;
    produce(&bootstrap, "tickets", &values(0..6))?;
    assert_eq!(m.fetch_until(6)?.len(), 6);
    // 0 accepted, 1 released (backing off for ten minutes), 2 rejected
    // (dead-lettered), 3..=5 still held.
    assert_eq!(
        m.acknowledge(&[(0, 0, ACCEPT), (1, 1, RELEASE), (2, 2, REJECT)])?,
        (0, 0)
    );
    wait_for_dead_letters(&broker, "dlq.support", 1)?;
    // The dead letter is visible a moment before the record is archived
    // for good (once it is committed): described until it is.
    let mut described = serde_json::Value::Null;
    common::wait_until(WAIT, "the dead letter confirmed", || {
        described = serde_json::from_str(&weir_ok(
            &broker,
            &["group", "describe", "support", "--json"],
            b"",
        )?)?;
        Ok(described["partitions"][0]["dead_lettering"] == 0)
    })?;
    assert_eq!(described["type"], "share");
    assert_eq!(described["dead_letter_topic"], "dlq.support");
    assert_eq!(described["members"].as_array().map(Vec::len), Some(1));
    assert_eq!(described["members"][0]["member_id"], m.id.as_str());
    let p = &described["partitions"][0];
    assert_eq!(
        (p["topic"].as_str(), p["partition"].as_i64()),
        (Some("tickets"), Some(0))
    );
    // The start offset passed the accepted record; the rejected one is
    // archived once its dead letter is confirmed.
    assert_eq!(p["start_offset"], 1, "{described}");
    assert_eq!(p["log_end_offset"], 6);
    assert_eq!(p["lag"], 5);
    assert_eq!(p["acquired"], 3, "{described}");
    assert_eq!(p["backing_off"], 1);
    assert_eq!(p["redeliverable"], 0);
    assert_eq!(p["delivery_counts"], serde_json::json!({"1": 4}));
    // And as text.
    let text = weir_ok(&broker, &["group", "describe", "support"], b"")?;
    assert!(text.contains("type: share"), "{text}");
    assert!(text.contains("dead-letter topic: dlq.support"), "{text}");
    assert!(text.contains("DELIVERY-COUNTS"), "{text}");
    Ok(())
}
