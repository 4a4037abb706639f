//! The replica manager's decisions on one broker's own log: roles, the
//! leader's high-watermark bound, ISR shrinking by lag. The wire side
//! (fetchers, produce and fetch answers) is `tests/replication.rs`.

use std::sync::atomic::{AtomicI64, Ordering};

use bytes::Bytes;
use weir_metadata::LocalMetadataStore;
use weir_storage::CommitLog;

use super::*;
use crate::admin::testing::batch;

#[derive(Default)]
struct ManualClock(AtomicI64);

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

struct Setup {
    manager: Arc<ReplicaManager>,
    clock: Arc<ManualClock>,
    partition: Partition,
    log: CommitLog,
    _dir: tempfile::TempDir,
}

const LAG_MS: u64 = 1_000;

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let (log, partition) = crate::admin::testing::fresh_partition(dir.path());
    let metadata = Arc::new(LocalMetadataStore::open(&dir.path().join("meta")).unwrap());
    let clock = Arc::new(ManualClock::default());
    let manager = ReplicaManager::new(
        ReplicaSettings {
            node_id: 1,
            lag_time_max_ms: LAG_MS,
            fetch_partition_bytes_max: 1 << 20,
            fetch_response_bytes_max: 10 << 20,
        },
        clock.clone(),
        metadata,
    );
    Setup {
        manager,
        clock,
        partition,
        log,
        _dir: dir,
    }
}

fn led_by_1(isr: &[i32]) -> PartitionAssignment {
    PartitionAssignment {
        replicas: vec![1, 2, 3],
        isr: isr.to_vec(),
        leader: 1,
        leader_epoch: 3,
        partition_epoch: 7,
        adding_replicas: Vec::new(),
        removing_replicas: Vec::new(),
    }
}

fn append_durable(p: &Partition, count: i64) {
    let out = p.append(batch(count)).unwrap();
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(out.durable.wait())
        .unwrap();
}

#[test]
fn a_partition_without_a_role_is_led_here_alone() {
    let s = setup();
    assert_eq!(
        s.manager.leadership(s.partition.id()),
        Leadership::Leader { isr: 1 }
    );
    append_durable(&s.partition, 4);
    assert_eq!(s.partition.offsets().high_watermark, 4);
    s.log.shutdown().unwrap();
}

#[test]
fn the_leader_high_watermark_waits_for_the_slowest_in_sync_follower() {
    let s = setup();
    s.manager
        .apply("t", &s.partition, &led_by_1(&[1, 2, 3]), &[])
        .unwrap();
    assert_eq!(s.partition.leader_epoch(), 3, "leading sets the epoch");
    append_durable(&s.partition, 10);
    assert_eq!(
        s.partition.offsets().high_watermark,
        0,
        "no follower has it"
    );
    let id = s.partition.id();
    s.manager.follower_fetched(id, 2, 10).unwrap();
    assert_eq!(
        s.partition.offsets().high_watermark,
        0,
        "broker 3 has nothing"
    );
    s.manager.follower_fetched(id, 3, 4).unwrap();
    assert_eq!(s.partition.offsets().high_watermark, 4);
    s.manager.follower_fetched(id, 3, 10).unwrap();
    assert_eq!(s.partition.offsets().high_watermark, 10);
    // Not a replica of the partition: not served.
    assert!(s.manager.follower_fetched(id, 9, 10).is_err());
    s.log.shutdown().unwrap();
}

#[test]
fn the_same_assignment_again_changes_nothing_and_a_committed_shrink_frees_the_high_watermark() {
    let s = setup();
    let id = s.partition.id();
    s.manager
        .apply("t", &s.partition, &led_by_1(&[1, 2, 3]), &[])
        .unwrap();
    append_durable(&s.partition, 5);
    s.manager.follower_fetched(id, 2, 5).unwrap();
    s.manager
        .apply("t", &s.partition, &led_by_1(&[1, 2, 3]), &[])
        .unwrap();
    // Broker 2's fetch is still counted: only broker 3 holds it back.
    s.manager.follower_fetched(id, 3, 2).unwrap();
    assert_eq!(s.partition.offsets().high_watermark, 2);
    // The controller committed an ISR without broker 3 (newer partition epoch).
    let mut shrunk = led_by_1(&[1, 2]);
    shrunk.partition_epoch += 1;
    s.manager.apply("t", &s.partition, &shrunk, &[]).unwrap();
    assert_eq!(s.partition.offsets().high_watermark, 5);
    assert_eq!(s.manager.leadership(id), Leadership::Leader { isr: 2 });
    s.log.shutdown().unwrap();
}

#[test]
fn a_follower_behind_for_the_lag_time_is_asked_out_of_the_isr_and_one_at_the_log_end_is_not() {
    let s = setup();
    let id = s.partition.id();
    s.manager
        .apply("t", &s.partition, &led_by_1(&[1, 2, 3]), &[])
        .unwrap();
    append_durable(&s.partition, 5);
    s.manager.follower_fetched(id, 2, 5).unwrap();
    s.manager.follower_fetched(id, 3, 1).unwrap();
    s.clock
        .0
        .store(i64::try_from(LAG_MS).unwrap(), Ordering::SeqCst);
    s.manager.shrink_isrs();
    let pending = |m: &ReplicaManager| match m.roles.lock().unwrap().get(&id) {
        Some(Role::Leader(l)) => l.pending_isr.clone(),
        _ => panic!("leader"),
    };
    assert_eq!(pending(&s.manager), None, "within the lag time");
    s.clock
        .0
        .store(i64::try_from(LAG_MS).unwrap() + 1, Ordering::SeqCst);
    s.manager.shrink_isrs();
    // Broker 2 fetched at the log end long ago, and is still in sync.
    assert_eq!(pending(&s.manager), Some([1, 2].into()));
    // Until the controller answers, the committed ISR holds the high watermark.
    assert_eq!(s.partition.offsets().high_watermark, 1);
    assert_eq!(s.manager.leadership(id), Leadership::Leader { isr: 3 });
    s.log.shutdown().unwrap();
}

#[tokio::test]
async fn a_follower_names_the_leader_and_stops_at_its_own_high_watermark() {
    let s = setup();
    let id = s.partition.id();
    s.partition
        .append(batch(3))
        .unwrap()
        .durable
        .wait()
        .await
        .unwrap();
    let mut a = led_by_1(&[2, 1]);
    a.leader = 2;
    let brokers = [BrokerInfo {
        id: 2,
        host: "127.0.0.1".into(),
        port: 1,
        rack: None,
        endpoints: Vec::new(),
        fenced: false,
        epoch: 1,
    }];
    s.manager.apply("t", &s.partition, &a, &brokers).unwrap();
    assert_eq!(
        s.manager.leadership(id),
        Leadership::NotLeader {
            leader: 2,
            leader_epoch: 3,
        }
    );
    assert!(
        s.manager.follower_fetched(id, 3, 0).is_err(),
        "not a leader"
    );
    // Appends past the leader's word are not committed here.
    let copied = s.partition.append_replica(stored(3, 1)).unwrap();
    copied.durable.wait().await.unwrap();
    assert_eq!(s.partition.offsets().high_watermark, 3);
    // The same assignment again changes nothing; the leader registered
    // again at a new address is followed there.
    s.manager.apply("t", &s.partition, &a, &brokers).unwrap();
    let endpoints = |m: &ReplicaManager| -> Vec<(String, i32)> {
        let fetchers = m.fetchers.lock().unwrap();
        fetchers.values().map(|f| f.endpoint.clone()).collect()
    };
    assert_eq!(endpoints(&s.manager), [("127.0.0.1".to_string(), 1)]);
    let mut moved = brokers.clone();
    moved[0].port = 2;
    s.manager.apply("t", &s.partition, &a, &moved).unwrap();
    assert_eq!(endpoints(&s.manager), [("127.0.0.1".to_string(), 2)]);
    assert!(matches!(
        s.manager.leadership(id),
        Leadership::NotLeader { leader: 2, .. }
    ));
    s.log.shutdown().unwrap();
}

/// A batch of `count` records as a leader stored it at `base`.
fn stored(base: i64, count: i64) -> Bytes {
    let mut b = batch(count).to_vec();
    b[..8].copy_from_slice(&base.to_be_bytes());
    Bytes::from(b)
}

mod through_the_handlers {
    use std::collections::BTreeMap;

    use kafka_protocol::messages::FetchRequest;
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic, ReplicaState};

    use super::*;
    use crate::admin::testing;

    /// A fetch of partition 0 of `topic_id` from `offset`, by `replica` (-1: a consumer), at v15.
    fn fetch(topic_id: uuid::Uuid, offset: i64, replica: i32) -> FetchRequest {
        FetchRequest::default()
            .with_replica_state(ReplicaState::default().with_replica_id(replica.into()))
            .with_max_wait_ms(0)
            .with_max_bytes(1 << 20)
            .with_session_epoch(-1)
            .with_topics(vec![
                FetchTopic::default()
                    .with_topic_id(topic_id)
                    .with_partitions(vec![
                        FetchPartition::default()
                            .with_partition(0)
                            .with_current_leader_epoch(-1)
                            .with_fetch_offset(offset)
                            .with_partition_max_bytes(1 << 20),
                    ]),
            ])
    }

    #[tokio::test]
    async fn a_follower_reads_past_the_high_watermark_and_its_fetch_offset_moves_it() {
        let t = testing::broker();
        let meta = t
            .broker
            .create_topic("r", 1, 1, BTreeMap::new(), false)
            .unwrap();
        let partition = t.broker.partition("r", 0).unwrap();
        // A replica fetch for a partition led here alone is refused.
        let alone = testing::call(&t.broker, 15, fetch(meta.id, 0, 2)).await;
        assert_eq!(alone.responses[0].partitions[0].error_code, 6);

        let assignment = PartitionAssignment {
            replicas: vec![0, 2],
            isr: vec![0, 2],
            leader: 0,
            leader_epoch: 1,
            partition_epoch: 1,
            adding_replicas: Vec::new(),
            removing_replicas: Vec::new(),
        };
        t.broker
            .replicas
            .apply("r", &partition, &assignment, &[])
            .unwrap();
        let out = partition.append(batch(3)).unwrap();
        out.durable.wait().await.unwrap();
        assert_eq!(partition.offsets().high_watermark, 0);

        let consumer = testing::call(&t.broker, 15, fetch(meta.id, 0, -1)).await;
        let data = &consumer.responses[0].partitions[0];
        assert_eq!((data.error_code, data.high_watermark), (0, 0));
        assert!(
            data.records.as_ref().unwrap().is_empty(),
            "nothing committed"
        );

        let follower = testing::call(&t.broker, 15, fetch(meta.id, 0, 2)).await;
        let data = &follower.responses[0].partitions[0];
        assert_eq!(data.error_code, 0);
        assert!(
            !data.records.as_ref().unwrap().is_empty(),
            "read to the log end"
        );
        assert_eq!(
            partition.offsets().high_watermark,
            0,
            "the follower has nothing yet"
        );

        testing::call(&t.broker, 15, fetch(meta.id, 3, 2)).await;
        assert_eq!(partition.offsets().high_watermark, 3);
        // Not a replica of the partition: refused.
        let stranger = testing::call(&t.broker, 15, fetch(meta.id, 3, 5)).await;
        assert_eq!(stranger.responses[0].partitions[0].error_code, 6);

        // A deleted topic's partition leaves the replica manager.
        t.broker.delete_topic("r").unwrap();
        assert_eq!(
            t.broker.replicas.leadership(partition.id()),
            Leadership::Leader { isr: 1 }
        );
    }

    #[tokio::test]
    async fn offset_for_leader_epoch_is_answered_by_the_leader_only() {
        use kafka_protocol::messages::offset_for_leader_epoch_request::{
            OffsetForLeaderPartition, OffsetForLeaderTopic,
        };
        use kafka_protocol::messages::{OffsetForLeaderEpochRequest, TopicName};

        let t = testing::broker();
        t.broker
            .create_topic("f", 1, 1, BTreeMap::new(), false)
            .unwrap();
        let partition = t.broker.partition("f", 0).unwrap();
        let request = || {
            OffsetForLeaderEpochRequest::default()
                .with_replica_id(3.into())
                .with_topics(vec![
                    OffsetForLeaderTopic::default()
                        .with_topic(TopicName(crate::admin::str_bytes("f")))
                        .with_partitions(vec![
                            OffsetForLeaderPartition::default()
                                .with_partition(0)
                                .with_current_leader_epoch(-1)
                                .with_leader_epoch(0),
                        ]),
                ])
        };
        let led = testing::call(&t.broker, 3, request()).await;
        assert_eq!(led.topics[0].partitions[0].error_code, 0);
        let mut a = led_by_1(&[1, 0]);
        a.replicas = vec![1, 0];
        t.broker.replicas.apply("f", &partition, &a, &[]).unwrap();
        let followed = testing::call(&t.broker, 3, request()).await;
        assert_eq!(
            followed.topics[0].partitions[0].error_code, 6,
            "a follower's log is not the leader's"
        );
    }
}
