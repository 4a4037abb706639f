//! Consumer groups end to end: librdkafka consumers sharing a topic through
//! the classic group protocol against a real `weir serve`, committed offsets
//! across a broker restart, and malformed or stale group requests answered
//! with Kafka's error codes (sent raw, encoded by `kafka-protocol`).

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::messages::describe_groups_response::DescribedGroup;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::{
    ConsumerProtocolAssignment, ConsumerProtocolSubscription, DeleteGroupsRequest,
    DescribeGroupsRequest, FindCoordinatorRequest, GroupId, HeartbeatRequest, JoinGroupRequest,
    JoinGroupResponse, LeaveGroupRequest, ListGroupsRequest, OffsetCommitRequest,
    OffsetFetchRequest, SyncGroupRequest, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use rdkafka::ClientContext;
use rdkafka::Message;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::producer::BaseRecord;

use common::Broker;
use common::raw::RawClient;

/// Kafka error codes the tests expect.
mod code {
    pub const NONE: i16 = 0;
    pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
    pub const ILLEGAL_GENERATION: i16 = 22;
    pub const UNKNOWN_MEMBER_ID: i16 = 25;
    pub const INVALID_REQUEST: i16 = 42;
    pub const NON_EMPTY_GROUP: i16 = 68;
    pub const GROUP_ID_NOT_FOUND: i16 = 69;
    pub const MEMBER_ID_REQUIRED: i16 = 79;
    pub const GROUP_MAX_SIZE_REACHED: i16 = 81;
    pub const FENCED_INSTANCE_ID: i16 = 82;
}

/// How long a group may take to settle after a membership change.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Client session timeout: short, so a silent member is noticed quickly.
const SESSION_TIMEOUT_MS: i32 = 3_000;
/// Session timeout of raw members that must not expire while a test runs.
const LONG_SESSION_TIMEOUT_MS: i32 = 60_000;

/// A broker with group timeouts short enough for tests.
fn start(extra: &[&str]) -> anyhow::Result<Broker> {
    let mut args = vec![
        "--set",
        "group.initial.rebalance.delay.ms=0",
        "--set",
        "group.min.session.timeout.ms=1000",
        "--set",
        "offsets.topic.num.partitions=5",
    ];
    args.extend_from_slice(extra);
    Broker::start(&args)
}

fn group_consumer(bootstrap: &str, group: &str, assignor: &str) -> anyhow::Result<BaseConsumer> {
    consumer_config(bootstrap, group, assignor)
        .create()
        .context("cannot create a group consumer")
}

fn consumer_config(bootstrap: &str, group: &str, assignor: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", SESSION_TIMEOUT_MS.to_string())
        .set("heartbeat.interval.ms", "200")
        .set("partition.assignment.strategy", assignor)
        .set("reconnect.backoff.ms", "50")
        .set("reconnect.backoff.max.ms", "500");
    config
}

/// A consumer context that records every rebalance callback.
#[derive(Default)]
struct Rebalances {
    /// Partitions revoked, in order, over the consumer's life.
    revoked: Mutex<Vec<i32>>,
    /// Rebalance callbacks seen (assign and revoke).
    events: Mutex<u32>,
}

impl ClientContext for Rebalances {}

impl ConsumerContext for Rebalances {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        *self.events.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        if let Rebalance::Revoke(list) = rebalance {
            self.revoked
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend(list.elements().iter().map(|e| e.partition()));
        }
    }
}

impl Rebalances {
    fn revoked(&self) -> Vec<i32> {
        self.revoked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn events(&self) -> u32 {
        *self.events.lock().unwrap_or_else(|e| e.into_inner())
    }
}

type Recorded = BaseConsumer<Rebalances>;

fn recorded_consumer(config: &ClientConfig) -> anyhow::Result<Recorded> {
    config
        .create_with_context(Rebalances::default())
        .context("cannot create a group consumer")
}

/// Produce `count` records to every partition of `topic`, values `wave-partition-i`.
fn produce_wave(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    wave: u32,
    count: u32,
) -> anyhow::Result<()> {
    let producer = common::tracked_producer(&common::producer_config(bootstrap))?;
    let mut id = 0u64;
    for p in 0..partitions {
        for i in 0..count {
            let value = format!("{wave}-{p}-{i}");
            common::send_tracked(
                &producer,
                BaseRecord::with_opaque_to(topic, Box::new(id))
                    .partition(p)
                    .payload(value.as_bytes()),
            )?;
            id += 1;
        }
    }
    common::flush_all_delivered(&producer, id as usize)?;
    Ok(())
}

/// Records consumed and committed, by (partition, offset), with how often.
type Ledger = BTreeMap<(i32, i64), u32>;

/// Poll every consumer once; a record counts as consumed once its
/// synchronous commit succeeded (a failed commit means another member gets it).
fn pump<C: ConsumerContext>(
    consumers: &[&BaseConsumer<C>],
    ledger: &mut Ledger,
) -> anyhow::Result<()> {
    for c in consumers {
        match c.poll(Duration::from_millis(20)) {
            Some(Err(err)) => eprintln!("consumer error (retried): {err}"),
            Some(Ok(message)) if c.commit_message(&message, CommitMode::Sync).is_ok() => {
                *ledger
                    .entry((message.partition(), message.offset()))
                    .or_default() += 1;
            }
            // No record, or its commit failed: another member will get it.
            _ => {}
        }
    }
    Ok(())
}

/// The partitions each consumer owns, as librdkafka sees them.
fn owned<C: ConsumerContext>(consumers: &[&BaseConsumer<C>]) -> anyhow::Result<Vec<BTreeSet<i32>>> {
    consumers
        .iter()
        .map(|c| {
            Ok(c.assignment()?
                .elements()
                .iter()
                .map(|e| e.partition())
                .collect())
        })
        .collect()
}

fn describe(bootstrap: &str, group: &str) -> anyhow::Result<DescribedGroup> {
    let mut raw = RawClient::connect(bootstrap)?;
    let response = raw.call(
        &DescribeGroupsRequest::default().with_groups(vec![group_id(group)]),
        5,
    )?;
    response
        .groups
        .into_iter()
        .next()
        .context("no group described")
}

/// Partitions a stable group's member was assigned, from DescribeGroups.
fn described_partitions(member_assignment: &Bytes) -> anyhow::Result<BTreeSet<i32>> {
    let mut buf = member_assignment.clone();
    if buf.len() < 2 {
        return Ok(BTreeSet::new());
    }
    let version = buf.get_i16();
    let assignment = ConsumerProtocolAssignment::decode(&mut buf, version.clamp(0, 3))?;
    Ok(assignment
        .assigned_partitions
        .iter()
        .flat_map(|t| t.partitions.iter().copied())
        .collect())
}

/// Pump until the group is stable with `members` members whose assignments
/// (in DescribeGroups and in each rdkafka consumer) cover all partitions once.
fn settle<C: ConsumerContext>(
    bootstrap: &str,
    group: &str,
    consumers: &[&BaseConsumer<C>],
    members: usize,
    partitions: i32,
    ledger: &mut Ledger,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    let all: BTreeSet<i32> = (0..partitions).collect();
    let mut last = String::new();
    while Instant::now() < deadline {
        pump(consumers, ledger)?;
        let g = describe(bootstrap, group)?;
        let described: Vec<BTreeSet<i32>> = g
            .members
            .iter()
            .map(|m| described_partitions(&m.member_assignment))
            .collect::<anyhow::Result<_>>()?;
        let local = owned(consumers)?;
        let union: BTreeSet<i32> = described.iter().flatten().copied().collect();
        let disjoint = described.iter().map(BTreeSet::len).sum::<usize>() == union.len();
        let local_union: BTreeSet<i32> = local.iter().flatten().copied().collect();
        let local_disjoint = local.iter().map(BTreeSet::len).sum::<usize>() == local_union.len();
        last = format!(
            "state {} members {described:?} local {local:?}",
            g.group_state
        );
        let local_ok = if consumers.len() == members {
            local_union == all && local_disjoint
        } else {
            local_disjoint
        };
        if g.group_state.as_str() == "Stable"
            && g.members.len() == members
            && union == all
            && disjoint
            && local_ok
        {
            return Ok(());
        }
    }
    bail!("group {group} did not settle on {members} members: {last}")
}

/// Pump until every record produced so far (`expected` per partition) is consumed.
fn drain<C: ConsumerContext>(
    consumers: &[&BaseConsumer<C>],
    ledger: &mut Ledger,
    expected: &HashMap<i32, i64>,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    loop {
        pump(consumers, ledger)?;
        let done = expected
            .iter()
            .all(|(p, end)| (0..*end).all(|o| ledger.contains_key(&(*p, o))));
        if done {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "records not consumed in time; consumed {} of {:?}",
                ledger.len(),
                expected
            );
        }
    }
}

/// A member driven by hand over a raw connection, that can stop heartbeating
/// as a killed process would.
struct RawMember {
    member_id: String,
    generation: i32,
}

fn subscription(topics: &[&str]) -> anyhow::Result<Bytes> {
    let mut buf = BytesMut::new();
    buf.extend_from_slice(&1i16.to_be_bytes());
    ConsumerProtocolSubscription::default()
        .with_topics(
            topics
                .iter()
                .map(|t| StrBytes::from_string(t.to_string()))
                .collect(),
        )
        .encode(&mut buf, 1)?;
    Ok(buf.freeze())
}

fn join_request(group: &str, member_id: &str, protocol: &str, metadata: Bytes) -> JoinGroupRequest {
    JoinGroupRequest::default()
        .with_group_id(group_id(group))
        .with_session_timeout_ms(LONG_SESSION_TIMEOUT_MS)
        .with_rebalance_timeout_ms(30_000)
        .with_member_id(StrBytes::from_string(member_id.to_string()))
        .with_protocol_type(StrBytes::from_static_str("consumer"))
        .with_protocols(vec![
            JoinGroupRequestProtocol::default()
                .with_name(StrBytes::from_string(protocol.to_string()))
                .with_metadata(metadata),
        ])
}

/// Join as a v5 client does: ask, get an id (MEMBER_ID_REQUIRED), join with it.
fn join_with_id(
    raw: &mut RawClient,
    request: JoinGroupRequest,
) -> anyhow::Result<JoinGroupResponse> {
    let first = raw.call(&request, 5)?;
    if first.error_code != code::MEMBER_ID_REQUIRED {
        return Ok(first);
    }
    Ok(raw.call(&request.with_member_id(first.member_id), 5)?)
}

fn group_id(s: &str) -> GroupId {
    GroupId(StrBytes::from_string(s.to_string()))
}

#[test]
fn three_consumers_share_partitions_and_rebalance_on_join_leave_and_kill() -> anyhow::Result<()> {
    let broker = start(&[])?;
    let bootstrap = broker.bootstrap();
    let topic = "orders";
    let group = "shop";
    let partitions = 6;
    common::create_topic_blocking(&bootstrap, topic, partitions, &[])?;
    let mut ledger = Ledger::new();
    let mut expected: HashMap<i32, i64> = HashMap::new();
    let wave = |n: u32, expected: &mut HashMap<i32, i64>| -> anyhow::Result<()> {
        produce_wave(&bootstrap, topic, partitions, n, 10)?;
        for p in 0..partitions {
            *expected.entry(p).or_default() += 10;
        }
        Ok(())
    };

    let c1 = group_consumer(&bootstrap, group, "range")?;
    let c2 = group_consumer(&bootstrap, group, "range")?;
    c1.subscribe(&[topic])?;
    c2.subscribe(&[topic])?;
    settle(&bootstrap, group, &[&c1, &c2], 2, partitions, &mut ledger)?;
    wave(0, &mut expected)?;
    drain(&[&c1, &c2], &mut ledger, &expected)?;

    // A third member joins: the partitions spread over three.
    let c3 = group_consumer(&bootstrap, group, "range")?;
    c3.subscribe(&[topic])?;
    settle(
        &bootstrap,
        group,
        &[&c1, &c2, &c3],
        3,
        partitions,
        &mut ledger,
    )?;
    assert!(owned(&[&c1, &c2, &c3])?.iter().all(|o| o.len() == 2));
    wave(1, &mut expected)?;
    drain(&[&c1, &c2, &c3], &mut ledger, &expected)?;

    // One leaves cleanly: the other two take its partitions.
    c2.unsubscribe();
    drop(c2);
    settle(&bootstrap, group, &[&c1, &c3], 2, partitions, &mut ledger)?;
    wave(2, &mut expected)?;
    drain(&[&c1, &c3], &mut ledger, &expected)?;

    // A member that is given partitions and then goes silent, as a killed
    // process does: its session expires and the others take over.
    let bootstrap_raw = bootstrap.clone();
    let joiner = std::thread::spawn(move || -> anyhow::Result<RawMember> {
        let mut raw = RawClient::connect(&bootstrap_raw)?;
        let joined = join_with_id(
            &mut raw,
            join_request(group, "", "range", subscription(&[topic])?)
                .with_session_timeout_ms(SESSION_TIMEOUT_MS),
        )?;
        if joined.error_code != code::NONE {
            bail!("raw member could not join: {}", joined.error_code);
        }
        let synced = raw.call(
            &SyncGroupRequest::default()
                .with_group_id(group_id(group))
                .with_generation_id(joined.generation_id)
                .with_member_id(joined.member_id.clone()),
            3,
        )?;
        if synced.error_code != code::NONE {
            bail!("raw member could not sync: {}", synced.error_code);
        }
        Ok(RawMember {
            member_id: joined.member_id.to_string(),
            generation: joined.generation_id,
        })
    });
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    while !joiner.is_finished() {
        if Instant::now() > deadline {
            bail!("the raw member never joined");
        }
        pump(&[&c1, &c3], &mut ledger)?;
    }
    let silent = joiner
        .join()
        .map_err(|_| anyhow::anyhow!("joiner panicked"))??;
    let g = describe(&bootstrap, group)?;
    assert!(
        g.members
            .iter()
            .any(|m| m.member_id.as_str() == silent.member_id),
        "the raw member (generation {}) is in the group",
        silent.generation
    );
    settle(&bootstrap, group, &[&c1, &c3], 2, partitions, &mut ledger)?;
    let g = describe(&bootstrap, group)?;
    assert!(
        g.members
            .iter()
            .all(|m| m.member_id.as_str() != silent.member_id)
    );
    wave(3, &mut expected)?;
    drain(&[&c1, &c3], &mut ledger, &expected)?;

    // Every record consumed (and committed) exactly once, none skipped.
    let duplicates: Vec<_> = ledger.iter().filter(|(_, n)| **n > 1).collect();
    assert!(duplicates.is_empty(), "consumed twice: {duplicates:?}");
    for (p, end) in &expected {
        for o in 0..*end {
            assert!(
                ledger.contains_key(&(*p, o)),
                "partition {p} offset {o} skipped"
            );
        }
    }
    Ok(())
}

#[test]
fn committed_offsets_and_groups_survive_a_broker_restart() -> anyhow::Result<()> {
    let port = common::reserve_port()?;
    let mut broker = Broker::start_at(
        &format!("127.0.0.1:{port}"),
        &[
            "--set",
            "group.initial.rebalance.delay.ms=0",
            "--set",
            "group.min.session.timeout.ms=1000",
        ],
    )?;
    let bootstrap = broker.bootstrap();
    let topic = "ledger";
    common::create_topic_blocking(&bootstrap, topic, 2, &[])?;
    produce_wave(&bootstrap, topic, 2, 0, 10)?;

    let consumer = group_consumer(&bootstrap, "accounts", "range")?;
    consumer.subscribe(&[topic])?;
    let mut ledger = Ledger::new();
    let expected = HashMap::from([(0, 10), (1, 10)]);
    drain(&[&consumer], &mut ledger, &expected)?;
    drop(consumer);

    broker.restart()?;

    let mut raw = RawClient::connect(&bootstrap)?;
    let fetched = raw.call(
        &OffsetFetchRequest::default()
            .with_group_id(group_id("accounts"))
            .with_topics(None),
        7,
    )?;
    let mut offsets: Vec<(i32, i64)> = fetched
        .topics
        .iter()
        .filter(|t| t.name.as_str() == topic)
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(|p| (p.partition_index, p.committed_offset))
        })
        .collect();
    offsets.sort();
    assert_eq!(
        offsets,
        vec![(0, 10), (1, 10)],
        "committed offsets after restart"
    );
    let g = describe(&bootstrap, "accounts")?;
    assert_eq!(g.error_code, code::NONE);
    assert_eq!(g.group_state.as_str(), "Empty");

    // A new member of the group resumes after the committed offsets.
    produce_wave(&bootstrap, topic, 2, 1, 3)?;
    let consumer = group_consumer(&bootstrap, "accounts", "range")?;
    consumer.subscribe(&[topic])?;
    let mut after = Ledger::new();
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    while after.len() < 6 {
        if Instant::now() > deadline {
            bail!("did not resume: {after:?}");
        }
        pump(&[&consumer], &mut after)?;
    }
    assert!(
        after.keys().all(|(_, o)| *o >= 10),
        "re-consumed committed records: {after:?}"
    );
    Ok(())
}

#[test]
fn stale_unknown_fenced_and_oversized_requests_get_kafka_error_codes() -> anyhow::Result<()> {
    let broker = start(&["--set", "group.max.size=2"])?;
    let bootstrap = broker.bootstrap();
    common::create_topic_blocking(&bootstrap, "known", 1, &[])?;
    let mut raw = RawClient::connect(&bootstrap)?;

    // FindCoordinator, single and batched: this broker.
    let found = raw.call(
        &FindCoordinatorRequest::default().with_key(StrBytes::from_static_str("g")),
        3,
    )?;
    assert_eq!(found.error_code, code::NONE);
    let found = raw.call(
        &FindCoordinatorRequest::default().with_coordinator_keys(vec![
            StrBytes::from_static_str("g"),
            StrBytes::from_static_str("h"),
        ]),
        4,
    )?;
    assert_eq!(found.coordinators.len(), 2);
    assert!(
        found
            .coordinators
            .iter()
            .all(|c| c.error_code == code::NONE)
    );

    // A first join without an id is asked to come back with one (v4+).
    let metadata = subscription(&["known"])?;
    let first = raw.call(&join_request("g", "", "range", metadata.clone()), 5)?;
    assert_eq!(first.error_code, code::MEMBER_ID_REQUIRED);
    assert!(!first.member_id.is_empty());
    let joined = raw.call(
        &join_request("g", &first.member_id, "range", metadata.clone()),
        5,
    )?;
    assert_eq!(joined.error_code, code::NONE);
    assert_eq!(joined.leader, joined.member_id, "the only member leads");
    assert_eq!(joined.generation_id, 1);
    let member = joined.member_id.clone();

    let heartbeat = |raw: &mut RawClient, member: &str, generation: i32, instance: Option<&str>| {
        raw.call(
            &HeartbeatRequest::default()
                .with_group_id(group_id("g"))
                .with_member_id(StrBytes::from_string(member.to_string()))
                .with_generation_id(generation)
                .with_group_instance_id(instance.map(|i| StrBytes::from_string(i.to_string()))),
            4,
        )
        .map(|r| r.error_code)
    };
    assert_eq!(
        heartbeat(&mut raw, "nobody", 1, None)?,
        code::UNKNOWN_MEMBER_ID
    );
    assert_eq!(
        heartbeat(&mut raw, &member, 0, None)?,
        code::ILLEGAL_GENERATION
    );

    // A stale generation in SyncGroup and OffsetCommit.
    let synced = raw.call(
        &SyncGroupRequest::default()
            .with_group_id(group_id("g"))
            .with_generation_id(7)
            .with_member_id(member.clone()),
        3,
    )?;
    assert_eq!(synced.error_code, code::ILLEGAL_GENERATION);
    let commit = |generation: i32, member: &str, topic: &str| {
        OffsetCommitRequest::default()
            .with_group_id(group_id("g"))
            .with_generation_id_or_member_epoch(generation)
            .with_member_id(StrBytes::from_string(member.to_string()))
            .with_topics(vec![
                OffsetCommitRequestTopic::default()
                    .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                    .with_partitions(vec![
                        OffsetCommitRequestPartition::default()
                            .with_partition_index(0)
                            .with_committed_offset(5),
                    ]),
            ])
    };
    let committed = raw.call(&commit(0, &member, "known"), 8)?;
    assert_eq!(
        committed.topics[0].partitions[0].error_code,
        code::ILLEGAL_GENERATION
    );
    let committed = raw.call(&commit(1, &member, "no-such-topic"), 8)?;
    assert_eq!(
        committed.topics[0].partitions[0].error_code,
        code::UNKNOWN_TOPIC_OR_PARTITION
    );

    // An oversized protocol metadata blob is refused by the named limit.
    let huge = Bytes::from(vec![0u8; 1024 * 1024 + 1]);
    let refused = raw.call(&join_request("other", "", "range", huge), 5)?;
    assert_eq!(refused.error_code, code::INVALID_REQUEST);

    // Static membership: the instance id belongs to one member at a time.
    let mut raw_static = RawClient::connect(&bootstrap)?;
    let static_join = raw_static.call(
        &join_request("statics", "", "range", metadata.clone())
            .with_group_instance_id(Some(StrBytes::from_static_str("instance-1"))),
        5,
    )?;
    assert_eq!(
        static_join.error_code,
        code::NONE,
        "static members get an id at once"
    );
    let fenced = raw_static.call(
        &HeartbeatRequest::default()
            .with_group_id(group_id("statics"))
            .with_member_id(StrBytes::from_static_str("impostor"))
            .with_generation_id(static_join.generation_id)
            .with_group_instance_id(Some(StrBytes::from_static_str("instance-1"))),
        4,
    )?;
    assert_eq!(fenced.error_code, code::FENCED_INSTANCE_ID);

    // group.max.size=2: a third member is refused while two are in.
    let mut second = RawClient::connect(&bootstrap)?;
    let bootstrap2 = bootstrap.clone();
    let metadata2 = metadata.clone();
    // The second member's join waits for the first to rejoin; leave it parked.
    let parked = std::thread::spawn(move || -> anyhow::Result<i16> {
        let mut c = RawClient::connect(&bootstrap2)?;
        Ok(join_with_id(&mut c, join_request("g", "", "range", metadata2))?.error_code)
    });
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    loop {
        let g = describe(&bootstrap, "g")?;
        if g.members.len() == 2 {
            break;
        }
        if Instant::now() > deadline {
            bail!("the second member never joined: {g:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let third = second.call(&join_request("g", "", "range", metadata.clone()), 5)?;
    assert_eq!(third.error_code, code::GROUP_MAX_SIZE_REACHED);
    // The first member rejoins, so the parked join completes.
    let rejoined = raw.call(&join_request("g", &member, "range", metadata.clone()), 5)?;
    assert_eq!(rejoined.error_code, code::NONE);
    assert_eq!(
        parked.join().map_err(|_| anyhow::anyhow!("panicked"))??,
        code::NONE
    );
    Ok(())
}

#[test]
fn groups_are_listed_by_state_and_only_empty_groups_are_deleted() -> anyhow::Result<()> {
    let broker = start(&[])?;
    let bootstrap = broker.bootstrap();
    common::create_topic_blocking(&bootstrap, "t", 1, &[])?;
    let mut raw = RawClient::connect(&bootstrap)?;
    let metadata = subscription(&["t"])?;
    let joined = join_with_id(&mut raw, join_request("active", "", "range", metadata))?;
    assert_eq!(joined.error_code, code::NONE);
    // An admin commit (generation -1) creates an empty group with offsets.
    let committed = raw.call(
        &OffsetCommitRequest::default()
            .with_group_id(group_id("idle"))
            .with_generation_id_or_member_epoch(-1)
            .with_topics(vec![
                OffsetCommitRequestTopic::default()
                    .with_name(TopicName(StrBytes::from_static_str("t")))
                    .with_partitions(vec![
                        OffsetCommitRequestPartition::default()
                            .with_partition_index(0)
                            .with_committed_offset(3),
                    ]),
            ]),
        8,
    )?;
    assert_eq!(committed.topics[0].partitions[0].error_code, code::NONE);

    let listed = raw.call(
        &ListGroupsRequest::default().with_states_filter(vec![StrBytes::from_static_str("Empty")]),
        4,
    )?;
    let names: Vec<&str> = listed.groups.iter().map(|g| g.group_id.as_str()).collect();
    assert_eq!(names, vec!["idle"]);
    let listed = raw.call(&ListGroupsRequest::default(), 3)?;
    let names: BTreeSet<&str> = listed.groups.iter().map(|g| g.group_id.as_str()).collect();
    assert_eq!(names, BTreeSet::from(["active", "idle"]));

    let deleted = raw.call(
        &DeleteGroupsRequest::default().with_groups_names(vec![
            group_id("active"),
            group_id("idle"),
            group_id("never"),
        ]),
        2,
    )?;
    let codes: Vec<i16> = deleted.results.iter().map(|r| r.error_code).collect();
    assert_eq!(
        codes,
        vec![code::NON_EMPTY_GROUP, code::NONE, code::GROUP_ID_NOT_FOUND]
    );
    // Before v6 a missing group is described as "Dead"; v6 says it is not found.
    assert_eq!(describe(&bootstrap, "idle")?.group_state.as_str(), "Dead");
    let described = raw.call(
        &DescribeGroupsRequest::default().with_groups(vec![group_id("idle")]),
        6,
    )?;
    assert_eq!(described.groups[0].error_code, code::GROUP_ID_NOT_FOUND);

    // The active member leaves: the group is empty and can go.
    let left = raw.call(
        &LeaveGroupRequest::default()
            .with_group_id(group_id("active"))
            .with_members(vec![
                kafka_protocol::messages::leave_group_request::MemberIdentity::default()
                    .with_member_id(joined.member_id.clone()),
            ]),
        5,
    )?;
    assert_eq!(left.members[0].error_code, code::NONE);
    assert_eq!(
        describe(&bootstrap, "active")?.group_state.as_str(),
        "Empty"
    );
    Ok(())
}

#[test]
fn cooperative_sticky_join_revokes_only_the_partitions_that_move() -> anyhow::Result<()> {
    let broker = start(&[])?;
    let bootstrap = broker.bootstrap();
    let (topic, group, partitions) = ("sticky", "sticky-group", 6);
    common::create_topic_blocking(&bootstrap, topic, partitions, &[])?;
    let config = consumer_config(&bootstrap, group, "cooperative-sticky");
    let c1 = recorded_consumer(&config)?;
    let c2 = recorded_consumer(&config)?;
    c1.subscribe(&[topic])?;
    c2.subscribe(&[topic])?;
    let mut ledger = Ledger::new();
    settle(&bootstrap, group, &[&c1, &c2], 2, partitions, &mut ledger)?;
    let before = owned(&[&c1, &c2])?;
    let revoked_before = (c1.context().revoked().len(), c2.context().revoked().len());

    let c3 = recorded_consumer(&config)?;
    c3.subscribe(&[topic])?;
    settle(
        &bootstrap,
        group,
        &[&c1, &c2, &c3],
        3,
        partitions,
        &mut ledger,
    )?;
    let after = owned(&[&c1, &c2, &c3])?;
    assert!(after.iter().all(|o| o.len() == 2), "balanced: {after:?}");
    for (i, c) in [&c1, &c2].iter().enumerate() {
        let skip = if i == 0 {
            revoked_before.0
        } else {
            revoked_before.1
        };
        let revoked: BTreeSet<i32> = c.context().revoked().into_iter().skip(skip).collect();
        let kept: BTreeSet<i32> = before[i].intersection(&after[i]).copied().collect();
        assert!(
            after[i].is_subset(&before[i]),
            "member {i} gained partitions: {before:?} -> {after:?}"
        );
        assert!(
            revoked.is_disjoint(&kept),
            "member {i} had partitions it kept revoked: revoked {revoked:?}, kept {kept:?}"
        );
        let moved: BTreeSet<i32> = before[i].difference(&after[i]).copied().collect();
        assert_eq!(
            revoked, moved,
            "member {i} revoked exactly what moved to the new member"
        );
    }
    Ok(())
}

#[test]
fn static_member_restarted_within_its_session_causes_no_rebalance() -> anyhow::Result<()> {
    let broker = start(&[])?;
    let bootstrap = broker.bootstrap();
    let (topic, group, partitions) = ("static", "static-group", 4);
    common::create_topic_blocking(&bootstrap, topic, partitions, &[])?;
    let member = |instance: &str| -> anyhow::Result<Recorded> {
        let mut config = consumer_config(&bootstrap, group, "range");
        config
            .set("group.instance.id", instance)
            .set("session.timeout.ms", "20000");
        let c = recorded_consumer(&config)?;
        c.subscribe(&[topic])?;
        Ok(c)
    };
    let c1 = member("host-1")?;
    let c2 = member("host-2")?;
    let mut ledger = Ledger::new();
    settle(&bootstrap, group, &[&c1, &c2], 2, partitions, &mut ledger)?;
    let owned_by_2 = owned(&[&c2])?.remove(0);
    let events = c1.context().events();

    // "Restart" host-2: a static member closes without leaving the group.
    drop(c2);
    assert_eq!(
        describe(&bootstrap, group)?.members.len(),
        2,
        "host-2 is still a member"
    );
    let c2 = member("host-2")?;
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    while owned(&[&c2])?.remove(0) != owned_by_2 {
        if Instant::now() > deadline {
            bail!("the restarted member did not get its partitions back");
        }
        pump(&[&c1, &c2], &mut ledger)?;
        let state = describe(&bootstrap, group)?.group_state;
        assert_eq!(state.as_str(), "Stable", "the group rebalanced");
    }
    // Give host-1 every chance to see a rebalance if there were one.
    for _ in 0..20 {
        pump(&[&c1, &c2], &mut ledger)?;
    }
    assert_eq!(c1.context().events(), events, "host-1 saw a rebalance");
    Ok(())
}

/// A consumer using the KIP-848 protocol, its assignment computed on the broker.
fn kip848_consumer(bootstrap: &str, group: &str) -> anyhow::Result<Recorded> {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("group.protocol", "consumer")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("reconnect.backoff.ms", "50")
        .set("reconnect.backoff.max.ms", "500");
    recorded_consumer(&config)
}

/// Pump until ConsumerGroupDescribe shows a stable group of `members` whose
/// assignments, and the rdkafka consumers' own, cover every partition once.
fn settle_848(
    bootstrap: &str,
    group: &str,
    consumers: &[&Recorded],
    members: usize,
    partitions: i32,
    ledger: &mut Ledger,
) -> anyhow::Result<()> {
    use kafka_protocol::messages::ConsumerGroupDescribeRequest;
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    let all: BTreeSet<i32> = (0..partitions).collect();
    let mut raw = RawClient::connect(bootstrap)?;
    let mut last = String::new();
    while Instant::now() < deadline {
        pump(consumers, ledger)?;
        let described = raw.call(
            &ConsumerGroupDescribeRequest::default().with_group_ids(vec![group_id(group)]),
            0,
        )?;
        let g = described.groups.into_iter().next().context("no group")?;
        let server: Vec<BTreeSet<i32>> = g
            .members
            .iter()
            .map(|m| {
                m.assignment
                    .topic_partitions
                    .iter()
                    .flat_map(|t| t.partitions.iter().copied())
                    .collect()
            })
            .collect();
        let local = owned(consumers)?;
        let union: BTreeSet<i32> = server.iter().flatten().copied().collect();
        let local_union: BTreeSet<i32> = local.iter().flatten().copied().collect();
        let disjoint = |sets: &[BTreeSet<i32>], u: &BTreeSet<i32>| {
            sets.iter().map(BTreeSet::len).sum::<usize>() == u.len()
        };
        last = format!(
            "state {} epoch {}/{} server {server:?} local {local:?}",
            g.group_state, g.group_epoch, g.assignment_epoch
        );
        let local_ok = if consumers.len() == members {
            local_union == all && disjoint(&local, &local_union)
        } else {
            disjoint(&local, &local_union)
        };
        if g.group_state.as_str() == "Stable"
            && g.members.len() == members
            && union == all
            && disjoint(&server, &union)
            && local_ok
        {
            return Ok(());
        }
    }
    bail!("consumer group {group} did not settle on {members} members: {last}")
}

#[test]
fn kip848_consumers_share_partitions_and_rebalance_incrementally() -> anyhow::Result<()> {
    use kafka_protocol::messages::ConsumerGroupHeartbeatRequest;
    let broker = start(&[
        "--set",
        "group.consumer.heartbeat.interval.ms=200",
        "--set",
        "group.consumer.session.timeout.ms=3000",
    ])?;
    let bootstrap = broker.bootstrap();
    let (topic, group, partitions) = ("events", "kip848", 6);
    common::create_topic_blocking(&bootstrap, topic, partitions, &[])?;
    let mut ledger = Ledger::new();
    let mut expected: HashMap<i32, i64> = HashMap::new();
    let wave = |n: u32, expected: &mut HashMap<i32, i64>| -> anyhow::Result<()> {
        produce_wave(&bootstrap, topic, partitions, n, 10)?;
        for p in 0..partitions {
            *expected.entry(p).or_default() += 10;
        }
        Ok(())
    };

    let c1 = kip848_consumer(&bootstrap, group)?;
    let c2 = kip848_consumer(&bootstrap, group)?;
    c1.subscribe(&[topic])?;
    c2.subscribe(&[topic])?;
    settle_848(&bootstrap, group, &[&c1, &c2], 2, partitions, &mut ledger)?;
    wave(0, &mut expected)?;
    drain(&[&c1, &c2], &mut ledger, &expected)?;

    // A third member: the others give up only the partitions that move.
    let before = owned(&[&c1, &c2])?;
    let revoked_before = [c1.context().revoked().len(), c2.context().revoked().len()];
    let c3 = kip848_consumer(&bootstrap, group)?;
    c3.subscribe(&[topic])?;
    settle_848(
        &bootstrap,
        group,
        &[&c1, &c2, &c3],
        3,
        partitions,
        &mut ledger,
    )?;
    let after = owned(&[&c1, &c2, &c3])?;
    assert!(after.iter().all(|o| o.len() == 2), "balanced: {after:?}");
    for (i, c) in [&c1, &c2].iter().enumerate() {
        let revoked: BTreeSet<i32> = c
            .context()
            .revoked()
            .into_iter()
            .skip(revoked_before[i])
            .collect();
        let moved: BTreeSet<i32> = before[i].difference(&after[i]).copied().collect();
        assert!(
            after[i].is_subset(&before[i]),
            "member {i}: {before:?} -> {after:?}"
        );
        assert_eq!(revoked, moved, "member {i} revoked only what moved");
    }
    wave(1, &mut expected)?;
    drain(&[&c1, &c2, &c3], &mut ledger, &expected)?;

    // One leaves.
    c2.unsubscribe();
    drop(c2);
    settle_848(&bootstrap, group, &[&c1, &c3], 2, partitions, &mut ledger)?;
    wave(2, &mut expected)?;
    drain(&[&c1, &c3], &mut ledger, &expected)?;

    // A member that takes partitions and goes silent is expired.
    let mut raw = RawClient::connect(&bootstrap)?;
    let joined = raw.call(
        &ConsumerGroupHeartbeatRequest::default()
            .with_group_id(group_id(group))
            .with_member_id(StrBytes::from_static_str("silent-member"))
            .with_member_epoch(0)
            .with_rebalance_timeout_ms(30_000)
            .with_subscribed_topic_names(Some(vec![TopicName(StrBytes::from_static_str(topic))]))
            .with_topic_partitions(Some(Vec::new())),
        1,
    )?;
    assert_eq!(joined.error_code, code::NONE);
    assert!(joined.member_epoch > 0);
    settle_848(&bootstrap, group, &[&c1, &c3], 2, partitions, &mut ledger)?;
    wave(3, &mut expected)?;
    drain(&[&c1, &c3], &mut ledger, &expected)?;

    let duplicates: Vec<_> = ledger.iter().filter(|(_, n)| **n > 1).collect();
    assert!(duplicates.is_empty(), "consumed twice: {duplicates:?}");
    for (p, end) in &expected {
        for o in 0..*end {
            assert!(
                ledger.contains_key(&(*p, o)),
                "partition {p} offset {o} skipped"
            );
        }
    }
    Ok(())
}

#[test]
fn kip848_group_and_offsets_survive_a_broker_restart() -> anyhow::Result<()> {
    use kafka_protocol::messages::ConsumerGroupDescribeRequest;
    let port = common::reserve_port()?;
    let mut broker = Broker::start_at(
        &format!("127.0.0.1:{port}"),
        &[
            "--set",
            "group.consumer.heartbeat.interval.ms=200",
            "--set",
            "offsets.topic.num.partitions=3",
        ],
    )?;
    let bootstrap = broker.bootstrap();
    let (topic, group, partitions) = ("durable848", "kip848-durable", 4);
    common::create_topic_blocking(&bootstrap, topic, partitions, &[])?;
    produce_wave(&bootstrap, topic, partitions, 0, 5)?;
    let consumer = kip848_consumer(&bootstrap, group)?;
    consumer.subscribe(&[topic])?;
    let mut ledger = Ledger::new();
    settle_848(&bootstrap, group, &[&consumer], 1, partitions, &mut ledger)?;
    let expected: HashMap<i32, i64> = (0..partitions).map(|p| (p, 5)).collect();
    drain(&[&consumer], &mut ledger, &expected)?;
    let describe = |bootstrap: &str| -> anyhow::Result<_> {
        let mut raw = RawClient::connect(bootstrap)?;
        let r = raw.call(
            &ConsumerGroupDescribeRequest::default().with_group_ids(vec![group_id(group)]),
            0,
        )?;
        r.groups.into_iter().next().context("no group")
    };
    let before = describe(&bootstrap)?;

    broker.restart()?;

    let after = describe(&bootstrap)?;
    assert_eq!(after.error_code, code::NONE);
    assert_eq!(after.group_epoch, before.group_epoch, "same group epoch");
    let ids = |g: &kafka_protocol::messages::consumer_group_describe_response::DescribedGroup| {
        g.members
            .iter()
            .map(|m| (m.member_id.to_string(), m.member_epoch))
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&after), ids(&before), "same members at the same epochs");
    // The member carries on: new records are consumed after the committed ones.
    produce_wave(&bootstrap, topic, partitions, 1, 2)?;
    let expected: HashMap<i32, i64> = (0..partitions).map(|p| (p, 7)).collect();
    drain(&[&consumer], &mut ledger, &expected)?;
    let duplicates: Vec<_> = ledger.iter().filter(|(_, n)| **n > 1).collect();
    assert!(duplicates.is_empty(), "consumed twice: {duplicates:?}");
    Ok(())
}

#[test]
fn kip848_static_member_restart_keeps_its_partitions_without_a_rebalance() -> anyhow::Result<()> {
    use kafka_protocol::messages::ConsumerGroupDescribeRequest;
    let broker = start(&["--set", "group.consumer.heartbeat.interval.ms=200"])?;
    let bootstrap = broker.bootstrap();
    let (topic, group, partitions) = ("static848", "kip848-static", 4);
    common::create_topic_blocking(&bootstrap, topic, partitions, &[])?;
    let member = |instance: &str| -> anyhow::Result<Recorded> {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &bootstrap)
            .set("group.id", group)
            .set("group.protocol", "consumer")
            .set("group.instance.id", instance)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest");
        let c = recorded_consumer(&config)?;
        c.subscribe(&[topic])?;
        Ok(c)
    };
    let c1 = member("host-1")?;
    let c2 = member("host-2")?;
    let mut ledger = Ledger::new();
    settle_848(&bootstrap, group, &[&c1, &c2], 2, partitions, &mut ledger)?;
    let owned_by_2 = owned(&[&c2])?.remove(0);
    let events = c1.context().events();
    let group_epoch = |bootstrap: &str| -> anyhow::Result<i32> {
        let mut raw = RawClient::connect(bootstrap)?;
        let r = raw.call(
            &ConsumerGroupDescribeRequest::default().with_group_ids(vec![group_id(group)]),
            0,
        )?;
        Ok(r.groups.first().context("no group")?.group_epoch)
    };
    let epoch = group_epoch(&bootstrap)?;

    drop(c2);
    let c2 = member("host-2")?;
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    while owned(&[&c2])?.remove(0) != owned_by_2 {
        if Instant::now() > deadline {
            bail!("the restarted static member did not get its partitions back");
        }
        pump(&[&c1, &c2], &mut ledger)?;
    }
    for _ in 0..20 {
        pump(&[&c1, &c2], &mut ledger)?;
    }
    assert_eq!(group_epoch(&bootstrap)?, epoch, "the group epoch moved");
    assert_eq!(c1.context().events(), events, "host-1 saw a rebalance");
    Ok(())
}

#[test]
fn compacted_offsets_topic_keeps_the_newest_commit_across_a_restart() -> anyhow::Result<()> {
    // One offsets partition and frequent maintenance, so compaction of
    // `__consumer_offsets` runs within the test.
    let mut broker = Broker::start(&[
        "--set",
        "offsets.topic.num.partitions=1",
        "--set",
        "log.retention.check.interval.ms=100",
    ])?;
    let bootstrap = broker.bootstrap();
    common::create_topic_blocking(&bootstrap, "compacted-commits", 1, &[])?;
    const COMMITS: i64 = 200;
    {
        let mut config = common::consumer_config(&bootstrap);
        config.set("group.id", "compacting");
        let consumer: BaseConsumer = config.create()?;
        for offset in 1..=COMMITS {
            let mut position = rdkafka::TopicPartitionList::new();
            position.add_partition_offset(
                "compacted-commits",
                0,
                rdkafka::Offset::Offset(offset),
            )?;
            consumer.commit(&position, CommitMode::Sync)?;
        }
    }
    // Every commit was one record; compaction leaves the newest per key.
    let stored = || -> anyhow::Result<usize> {
        let read = common::read_to_high_watermark(
            &bootstrap,
            "__consumer_offsets",
            &[0],
            Duration::from_secs(30),
        )?;
        Ok(read.get(&0).map_or(0, Vec::len))
    };
    common::wait_until(
        Duration::from_secs(60),
        "compaction of __consumer_offsets",
        || Ok(stored()? < COMMITS as usize / 2),
    )?;
    broker.restart()?;
    let bootstrap = broker.bootstrap();
    let mut config = common::consumer_config(&bootstrap);
    config.set("group.id", "compacting");
    let consumer: BaseConsumer = config.create()?;
    let mut wanted = rdkafka::TopicPartitionList::new();
    wanted.add_partition("compacted-commits", 0);
    let committed = consumer.committed_offsets(wanted, Duration::from_secs(10))?;
    let offset = committed
        .find_partition("compacted-commits", 0)
        .map(|p| p.offset());
    assert_eq!(offset, Some(rdkafka::Offset::Offset(COMMITS)));
    Ok(())
}

/// A record of `__consumer_offsets` that is not the coordinator's, written
/// into the stopped broker's data folder through the storage crate (clients
/// can no longer produce to internal topics, so this is how such data now
/// arises: from a broker before that fix, or a future Weir's record kind).
fn write_foreign_offsets_record(data_dir: &std::path::Path) -> anyhow::Result<()> {
    use kafka_protocol::records::{
        Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };
    use weir_metadata::MetadataStore;
    let clock = std::sync::Arc::new(weir_storage::SystemClock);
    let (log, _) =
        weir_storage::CommitLog::open(data_dir, weir_storage::LogConfig::default(), clock)?;
    let metadata = weir_metadata::LocalMetadataStore::open(data_dir)?;
    let topic = metadata
        .topic("__consumer_offsets")
        .context("no __consumer_offsets")?;
    let partition = log.create_partition(
        weir_storage::PartitionId {
            topic_id: topic.id,
            partition: 0,
        },
        weir_storage::PartitionConfig {
            compact: true,
            ..weir_storage::PartitionConfig::default()
        },
    )?;
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
        timestamp: 0,
        // What `echo garbage | kcat -P -t __consumer_offsets -p 0 -k zzz` wrote.
        key: Some(Bytes::from_static(b"zzz")),
        value: Some(Bytes::from_static(b"garbage\n")),
        headers: Default::default(),
    };
    let mut batch = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut batch,
        [record].iter(),
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )?;
    let appended = partition.append(batch.freeze())?;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(appended.durable.wait())?;
    Ok(())
}

#[test]
fn a_broker_whose_offsets_topic_holds_a_foreign_record_starts_and_serves_groups()
-> anyhow::Result<()> {
    let mut broker = start(&["--set", "offsets.topic.num.partitions=1"])?;
    let bootstrap = broker.bootstrap();
    let (topic, group) = ("foreign", "survivor");
    common::create_topic_blocking(&bootstrap, topic, 1, &[])?;
    produce_wave(&bootstrap, topic, 1, 0, 10)?;
    let committed = |bootstrap: &str| -> anyhow::Result<Option<rdkafka::Offset>> {
        let consumer = group_consumer(bootstrap, group, "range")?;
        let mut wanted = rdkafka::TopicPartitionList::new();
        wanted.add_partition(topic, 0);
        let got = consumer.committed_offsets(wanted, Duration::from_secs(10))?;
        Ok(got.find_partition(topic, 0).map(|p| p.offset()))
    };
    {
        let consumer = group_consumer(&bootstrap, group, "range")?;
        let mut position = rdkafka::TopicPartitionList::new();
        position.add_partition_offset(topic, 0, rdkafka::Offset::Offset(4))?;
        consumer.commit(&position, CommitMode::Sync)?;
    }
    broker.stop()?;
    write_foreign_offsets_record(&broker.data_dir())?;

    broker.restart()?;
    let bootstrap = broker.bootstrap();
    assert_eq!(committed(&bootstrap)?, Some(rdkafka::Offset::Offset(4)));
    // The group works: its member resumes at the committed offset.
    let consumer = group_consumer(&bootstrap, group, "range")?;
    consumer.subscribe(&[topic])?;
    let mut ledger = Ledger::new();
    let expected = HashMap::from([(0, 10)]);
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    while !(4..10).all(|o| ledger.contains_key(&(0, o))) {
        if Instant::now() > deadline {
            bail!("records after the committed offset not consumed: {ledger:?}");
        }
        pump(&[&consumer], &mut ledger)?;
    }
    assert!(
        (0..4).all(|o| !ledger.contains_key(&(0, o))),
        "consumed before the committed offset: {ledger:?} of {expected:?}"
    );
    Ok(())
}

#[test]
fn group_members_report_the_host_they_connect_from_in_both_protocols() -> anyhow::Result<()> {
    use kafka_protocol::messages::ConsumerGroupDescribeRequest;
    let broker = start(&["--set", "group.consumer.heartbeat.interval.ms=200"])?;
    let bootstrap = broker.bootstrap();
    let (topic, partitions) = ("hosts", 2);
    common::create_topic_blocking(&bootstrap, topic, partitions, &[])?;
    let mut ledger = Ledger::new();

    let classic = group_consumer(&bootstrap, "hosts-classic", "range")?;
    classic.subscribe(&[topic])?;
    settle(
        &bootstrap,
        "hosts-classic",
        &[&classic],
        1,
        partitions,
        &mut ledger,
    )?;
    let described = describe(&bootstrap, "hosts-classic")?;
    let hosts: Vec<&str> = described
        .members
        .iter()
        .map(|m| m.client_host.as_str())
        .collect();
    assert_eq!(hosts, ["/127.0.0.1"]);

    let kip848 = kip848_consumer(&bootstrap, "hosts-848")?;
    kip848.subscribe(&[topic])?;
    settle_848(
        &bootstrap,
        "hosts-848",
        &[&kip848],
        1,
        partitions,
        &mut ledger,
    )?;
    let mut raw = RawClient::connect(&bootstrap)?;
    let described = raw.call(
        &ConsumerGroupDescribeRequest::default().with_group_ids(vec![group_id("hosts-848")]),
        0,
    )?;
    let hosts: Vec<String> = described
        .groups
        .iter()
        .flat_map(|g| &g.members)
        .map(|m| m.client_host.to_string())
        .collect();
    assert_eq!(hosts, ["/127.0.0.1"]);
    Ok(())
}

#[test]
fn a_group_migrates_between_protocols_while_both_kinds_of_member_consume() -> anyhow::Result<()> {
    migrate_and_back("range", "migrating")
}

#[test]
fn a_cooperative_classic_member_gives_up_partitions_incrementally_in_a_migrated_group()
-> anyhow::Result<()> {
    migrate_and_back("cooperative-sticky", "migrating-coop")
}

/// A classic member (eager or cooperative, by `assignor`) and a KIP-848
/// member in one group: upgrade, both consume, downgrade; every record is
/// consumed once and the committed offsets carry across both migrations.
fn migrate_and_back(assignor: &str, group: &str) -> anyhow::Result<()> {
    let broker = start(&[
        "--set",
        "group.consumer.heartbeat.interval.ms=200",
        "--set",
        "group.consumer.session.timeout.ms=3000",
    ])?;
    let bootstrap = broker.bootstrap();
    let (topic, partitions) = (group, 4);
    common::create_topic_blocking(&bootstrap, topic, partitions, &[])?;
    let mut ledger = Ledger::new();
    let mut expected: HashMap<i32, i64> = HashMap::new();
    let wave = |n: u32, expected: &mut HashMap<i32, i64>| -> anyhow::Result<()> {
        produce_wave(&bootstrap, topic, partitions, n, 10)?;
        for p in 0..partitions {
            *expected.entry(p).or_default() += 10;
        }
        Ok(())
    };

    // A classic group, stable, with committed offsets.
    let classic = recorded_consumer(&consumer_config(&bootstrap, group, assignor))?;
    classic.subscribe(&[topic])?;
    settle(&bootstrap, group, &[&classic], 1, partitions, &mut ledger)?;
    wave(0, &mut expected)?;
    drain(&[&classic], &mut ledger, &expected)?;

    // A consumer-protocol member joins: the group is upgraded, and both
    // members end up owning partitions, never the same one.
    let revoked_before = classic.context().revoked().len();
    let kip848 = kip848_consumer(&bootstrap, group)?;
    kip848.subscribe(&[topic])?;
    let all: BTreeSet<i32> = (0..partitions).collect();
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    loop {
        pump(&[&classic, &kip848], &mut ledger)?;
        let local = owned(&[&classic, &kip848])?;
        let union: BTreeSet<i32> = local.iter().flatten().copied().collect();
        let sum: usize = local.iter().map(BTreeSet::len).sum();
        if local.iter().all(|o| !o.is_empty()) && union == all && sum == union.len() {
            break;
        }
        if Instant::now() > deadline {
            bail!("the upgraded group did not share its partitions: {local:?}");
        }
    }
    let group_type = || -> anyhow::Result<String> {
        let mut raw = RawClient::connect(&bootstrap)?;
        let listed = raw.call(&ListGroupsRequest::default(), 5)?;
        let g = listed.groups.iter().find(|g| g.group_id.as_str() == group);
        Ok(g.context("group not listed")?.group_type.to_string())
    };
    assert_eq!(group_type()?, "consumer", "upgraded");
    if assignor == "cooperative-sticky" {
        let kept = owned(&[&classic])?.remove(0);
        let revoked: BTreeSet<i32> = classic
            .context()
            .revoked()
            .into_iter()
            .skip(revoked_before)
            .collect();
        let moved: BTreeSet<i32> = all.difference(&kept).copied().collect();
        assert_eq!(revoked, moved, "the classic member revoked only what moved");
    }
    assert_eq!(describe(&bootstrap, group)?.members.len(), 2);
    wave(1, &mut expected)?;
    drain(&[&classic, &kip848], &mut ledger, &expected)?;

    // The consumer-protocol member leaves: the group is a classic group again.
    kip848.unsubscribe();
    drop(kip848);
    settle(&bootstrap, group, &[&classic], 1, partitions, &mut ledger)?;
    assert_eq!(group_type()?, "classic", "downgraded");
    wave(2, &mut expected)?;
    drain(&[&classic], &mut ledger, &expected)?;

    let duplicates: Vec<_> = ledger.iter().filter(|(_, n)| **n > 1).collect();
    assert!(duplicates.is_empty(), "consumed twice: {duplicates:?}");
    let mut wanted = rdkafka::TopicPartitionList::new();
    for p in 0..partitions {
        wanted.add_partition(topic, p);
    }
    let committed = classic.committed_offsets(wanted, Duration::from_secs(10))?;
    for p in 0..partitions {
        let offset = committed.find_partition(topic, p).map(|e| e.offset());
        assert_eq!(offset, Some(rdkafka::Offset::Offset(30)), "partition {p}");
    }
    Ok(())
}
