//! Partition replication between two brokers in one process, each with its
//! own commit log, served over real TCP by weir-server on 127.0.0.1 and
//! driven by real Kafka clients (librdkafka through `rdkafka`, and
//! weir-client for a request whose exact answer is checked).
//!
//! The two brokers share one [`TestStore`]: it stands in for the openraft
//! metadata quorum only (assignments, registrations and AlterPartition as
//! the controller answers them); the test plays the controller's part when
//! it moves leadership, and calls [`Broker::apply_replica_assignments`] as
//! the change feed will.

// Helpers build fixed, valid requests; a failure there is a bug in the test.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    FetchRequest, ListOffsetsRequest, MetadataRequest, ProduceRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use rdkafka::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use uuid::Uuid;
use weir_broker::{Broker, BrokerConfig};
use weir_metadata::{
    AlterPartition, BrokerInfo, ConfigChange, MetadataError, MetadataStore, NewTopic,
    PartitionAssignment, TopicMeta,
};
use weir_server::ServerLimits;
use weir_storage::{CommitLog, LogConfig, PartitionId, SystemClock};

/// Longest any wait for the cluster to get somewhere may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);
/// `replica.lag.time.max.ms`, small so the ISR shrinks within the test.
const LAG_TIME_MAX_MS: u64 = 1_000;
const TOPIC: &str = "replicated";

/// The shared metadata: the quorum's stand-in (see the module comment).
#[derive(Default)]
struct TestStore {
    inner: Mutex<Inner>,
    changes: Option<tokio::sync::watch::Sender<u64>>,
}

#[derive(Default)]
struct Inner {
    topics: BTreeMap<String, TopicMeta>,
    brokers: Vec<BrokerInfo>,
    next_producer_id: i64,
}

impl TestStore {
    fn new() -> Self {
        Self {
            inner: Mutex::default(),
            changes: Some(tokio::sync::watch::channel(0).0),
        }
    }

    fn set_broker(&self, id: i32, port: u16) {
        let mut inner = self.inner.lock().unwrap();
        inner.brokers.retain(|b| b.id != id);
        inner.brokers.push(BrokerInfo {
            id,
            host: "127.0.0.1".into(),
            port: i32::from(port),
            rack: None,
            endpoints: Vec::new(),
            fenced: false,
            epoch: 1,
        });
        inner.brokers.sort_by_key(|b| b.id);
    }

    fn assignment(&self) -> PartitionAssignment {
        self.inner.lock().unwrap().topics[TOPIC].assignments[0].clone()
    }

    /// The controller's decision, written over whatever was there.
    fn set_assignment(&self, a: PartitionAssignment) {
        self.inner
            .lock()
            .unwrap()
            .topics
            .get_mut(TOPIC)
            .unwrap()
            .assignments = vec![a];
    }
}

impl MetadataStore for TestStore {
    fn cluster_id(&self) -> String {
        "replication-test".into()
    }
    fn topics(&self) -> Vec<TopicMeta> {
        self.inner
            .lock()
            .unwrap()
            .topics
            .values()
            .cloned()
            .collect()
    }
    fn topic(&self, name: &str) -> Option<TopicMeta> {
        self.inner.lock().unwrap().topics.get(name).cloned()
    }
    fn topic_by_id(&self, id: Uuid) -> Option<TopicMeta> {
        let inner = self.inner.lock().unwrap();
        inner.topics.values().find(|t| t.id == id).cloned()
    }
    fn create_topic(&self, topic: NewTopic) -> Result<TopicMeta, MetadataError> {
        let meta = TopicMeta {
            name: topic.name.clone(),
            id: topic.id,
            partitions: topic.partitions,
            replication_factor: topic.replication_factor,
            configs: topic.configs,
            assignments: Vec::new(),
        };
        let mut inner = self.inner.lock().unwrap();
        if inner.topics.contains_key(&topic.name) {
            return Err(MetadataError::TopicAlreadyExists(topic.name));
        }
        inner.topics.insert(topic.name, meta.clone());
        Ok(meta)
    }
    fn delete_topic(&self, name: &str) -> Result<TopicMeta, MetadataError> {
        let mut inner = self.inner.lock().unwrap();
        inner
            .topics
            .remove(name)
            .ok_or_else(|| MetadataError::UnknownTopic(name.into()))
    }
    fn set_partition_count(&self, name: &str, _total: i32) -> Result<TopicMeta, MetadataError> {
        Err(MetadataError::InvalidPartitions(format!(
            "not in this test ({name})"
        )))
    }
    fn alter_topic_configs(
        &self,
        name: &str,
        _changes: &[ConfigChange],
    ) -> Result<TopicMeta, MetadataError> {
        Err(MetadataError::UnknownTopic(name.into()))
    }
    fn broker_configs(&self) -> BTreeMap<String, String> {
        BTreeMap::new()
    }
    fn alter_broker_configs(&self, _changes: &[ConfigChange]) -> Result<(), MetadataError> {
        Ok(())
    }
    fn group_configs(&self, _group: &str) -> BTreeMap<String, String> {
        BTreeMap::new()
    }
    fn alter_group_configs(
        &self,
        group: &str,
        _changes: &[ConfigChange],
    ) -> Result<(), MetadataError> {
        Err(MetadataError::Storage(format!(
            "not in this test ({group})"
        )))
    }
    fn allocate_producer_ids(&self, count: i64) -> Result<i64, MetadataError> {
        let mut inner = self.inner.lock().unwrap();
        let first = inner.next_producer_id;
        inner.next_producer_id += count;
        Ok(first)
    }
    fn brokers(&self) -> Vec<BrokerInfo> {
        self.inner.lock().unwrap().brokers.clone()
    }
    fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.as_ref().unwrap().subscribe()
    }
    /// The controller's checks, as Kafka's: the leader under its current
    /// epochs, an ISR of replicas.
    fn alter_partition(
        &self,
        change: AlterPartition,
    ) -> Result<PartitionAssignment, MetadataError> {
        let mut inner = self.inner.lock().unwrap();
        let topic = inner
            .topics
            .values_mut()
            .find(|t| t.id == change.topic_id)
            .ok_or_else(|| MetadataError::UnknownTopic(change.topic_id.to_string()))?;
        let a = &mut topic.assignments[usize::try_from(change.partition).unwrap()];
        if change.leader != a.leader
            || change.leader_epoch != a.leader_epoch
            || change.partition_epoch != a.partition_epoch
        {
            return Err(MetadataError::StalePartitionChange(format!("{change:?}")));
        }
        if change.new_isr.iter().any(|r| !a.replicas.contains(r)) {
            return Err(MetadataError::IneligibleReplica(format!("{change:?}")));
        }
        a.isr = change.new_isr;
        a.partition_epoch += 1;
        Ok(a.clone())
    }
}

/// One broker: its log, served on its listener.
struct Node {
    broker: Arc<Broker>,
    addr: std::net::SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    served: JoinHandle<std::io::Result<()>>,
    dir: PathBuf,
}

impl Node {
    async fn start(
        id: i32,
        dir: &Path,
        listener: TcpListener,
        store: &Arc<TestStore>,
    ) -> anyhow::Result<Node> {
        let clock = Arc::new(SystemClock);
        let (log, _) = CommitLog::open(dir, LogConfig::default(), clock.clone())?;
        let addr = listener.local_addr()?;
        let config = BrokerConfig {
            node_id: id,
            advertised_port: i32::from(addr.port()),
            replica_lag_time_max_ms: LAG_TIME_MAX_MS,
            ..BrokerConfig::default()
        };
        let metadata: Arc<dyn MetadataStore> = store.clone();
        let broker = Arc::new(
            Broker::new(config, log, metadata, clock).map_err(|e| anyhow::anyhow!("{e}"))?,
        );
        let (stop, stopped) = oneshot::channel::<()>();
        let served = tokio::spawn(weir_server::serve(
            vec![weir_server::Listener::plaintext(listener)],
            broker.clone(),
            ServerLimits::default(),
            async move {
                let _ = stopped.await;
            },
        ));
        Ok(Node {
            broker,
            addr,
            stop: Some(stop),
            served,
            dir: dir.to_path_buf(),
        })
    }

    fn partition(&self, topic_id: Uuid) -> weir_storage::Partition {
        self.broker
            .log()
            .partition(PartitionId {
                topic_id,
                partition: 0,
            })
            .expect("the partition is open")
    }

    /// Stop serving, drop the broker (its fetchers with it) and close the log.
    async fn stop(mut self) -> anyhow::Result<PathBuf> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(STEP_TIMEOUT, &mut self.served)
            .await
            .context("serve did not return")???;
        let log = self.broker.log().clone();
        drop(self.broker);
        log.shutdown()?;
        Ok(self.dir)
    }
}

fn producer(addr: std::net::SocketAddr) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", addr.to_string())
        .set("acks", "all")
        .set("enable.idempotence", "false")
        // Every error reaches the test as the broker gave it.
        .set("retries", "0")
        .set("message.timeout.ms", "10000")
        .set("linger.ms", "0")
        .create()
        .expect("producer config is valid")
}

async fn send(p: &FutureProducer, value: &str) -> Result<i64, KafkaError> {
    p.send(
        FutureRecord::<(), str>::to(TOPIC)
            .partition(0)
            .payload(value),
        Duration::from_secs(10),
    )
    .await
    .map(|delivered| delivered.offset)
    .map_err(|(err, _)| err)
}

/// Poll `done` until it holds, or fail after [`STEP_TIMEOUT`].
async fn until(what: &str, mut done: impl FnMut() -> bool) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + STEP_TIMEOUT;
    while !done() {
        if tokio::time::Instant::now() > deadline {
            bail!("timed out waiting until {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Everything in a partition, as a replica reads it.
fn all_batches(p: &weir_storage::Partition) -> bytes::Bytes {
    let end = p.offsets().log_end;
    let mut out = Vec::new();
    let mut offset = 0;
    while offset < end {
        let read = p.read_replica(offset, 1 << 20).expect("readable");
        let last = weir_storage::batches(&read.records)
            .map(|b| b.expect("whole batches").0)
            .last()
            .expect("a batch");
        offset = last.base_offset + i64::from(last.last_offset_delta) + 1;
        out.extend_from_slice(&read.records);
    }
    out.into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn followers_copy_the_leader_the_isr_follows_them_and_a_new_leader_truncates_the_old_tail()
-> anyhow::Result<()> {
    let store = Arc::new(TestStore::new());
    let dirs = [tempfile::tempdir()?, tempfile::tempdir()?];
    let listeners = [
        TcpListener::bind("127.0.0.1:0").await?,
        TcpListener::bind("127.0.0.1:0").await?,
    ];
    store.set_broker(1, listeners[0].local_addr()?.port());
    store.set_broker(2, listeners[1].local_addr()?.port());
    let topic_id = Uuid::from_u128(0x9e1c);
    store.create_topic(NewTopic {
        name: TOPIC.into(),
        id: topic_id,
        partitions: 1,
        replication_factor: 2,
        configs: [("min.insync.replicas".to_string(), "2".to_string())].into(),
        assignments: None,
    })?;
    store.set_assignment(PartitionAssignment {
        replicas: vec![1, 2],
        isr: vec![1, 2],
        leader: 1,
        leader_epoch: 1,
        partition_epoch: 1,
        adding_replicas: Vec::new(),
        removing_replicas: Vec::new(),
    });
    let [l1, l2] = listeners;
    let n1 = Node::start(1, dirs[0].path(), l1, &store).await?;
    let n2 = Node::start(2, dirs[1].path(), l2, &store).await?;
    n1.broker.apply_replica_assignments()?;
    n2.broker.apply_replica_assignments()?;

    // acks=all to the leader: answered once the follower holds the batch.
    let to_leader = producer(n1.addr);
    for i in 0..20 {
        assert_eq!(send(&to_leader, &format!("first-{i}")).await?, i);
    }
    let (leader_p, follower_p) = (n1.partition(topic_id), n2.partition(topic_id));
    assert_eq!(leader_p.offsets().high_watermark, 20);
    assert!(follower_p.offsets().log_end >= 20, "committed means copied");
    until("the follower learns the high watermark", || {
        follower_p.offsets().high_watermark == 20
    })
    .await?;
    assert_eq!(all_batches(&follower_p), all_batches(&leader_p));

    // Either broker's Metadata names both brokers, the leader, the replicas
    // and the ISR as the metadata assigns them.
    for node in [&n1, &n2] {
        let addr = node.addr.to_string();
        let metadata = tokio::task::spawn_blocking(move || {
            let mut conn = weir_client::Connection::connect(&addr)?;
            conn.send(&MetadataRequest::default().with_topics(None), 12)
        })
        .await??;
        let mut brokers: Vec<i32> = metadata.brokers.iter().map(|b| b.node_id.0).collect();
        brokers.sort_unstable();
        assert_eq!(brokers, vec![1, 2]);
        let topic = metadata
            .topics
            .iter()
            .find(|t| t.topic_id == topic_id)
            .context("the topic is missing from Metadata")?;
        let p = &topic.partitions[0];
        assert_eq!((p.error_code, p.leader_id.0, p.leader_epoch), (0, 1, 1));
        assert_eq!(
            p.replica_nodes.iter().map(|b| b.0).collect::<Vec<_>>(),
            vec![1, 2]
        );
        assert_eq!(
            p.isr_nodes.iter().map(|b| b.0).collect::<Vec<_>>(),
            vec![1, 2]
        );
        assert!(p.offline_replicas.is_empty());
    }

    // A produce to the follower is sent to the leader (KIP-951).
    let follower_addr = n2.addr.to_string();
    let answer = tokio::task::spawn_blocking(move || {
        let mut conn = weir_client::Connection::connect(&follower_addr)?;
        let request = ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(5_000)
            .with_topic_data(vec![
                TopicProduceData::default()
                    .with_name(TopicName(StrBytes::from_static_str(TOPIC)))
                    .with_partition_data(vec![
                        PartitionProduceData::default()
                            .with_index(0)
                            .with_records(Some(all_batches(&follower_p).slice(..0))),
                    ]),
            ]);
        conn.call(&request, 10)
    })
    .await??;
    let partition = &answer.responses[0].partition_responses[0];
    assert_eq!(partition.error_code, 6, "NOT_LEADER_OR_FOLLOWER");
    assert_eq!(partition.current_leader.leader_id.0, 1);
    assert_eq!(partition.current_leader.leader_epoch, 1);
    assert_eq!(answer.node_endpoints[0].port, i32::from(n1.addr.port()));

    // A consumer's fetch from before KIP-392 (v10) is sent to the leader
    // too; from v11 on, the follower serves it up to its high watermark.
    let fetch_from_follower = |version: i16| {
        let follower_addr = n2.addr.to_string();
        tokio::task::spawn_blocking(move || {
            let mut conn = weir_client::Connection::connect(&follower_addr)?;
            let request = FetchRequest::default()
                .with_max_wait_ms(0)
                .with_max_bytes(1 << 20)
                .with_session_epoch(-1)
                .with_topics(vec![
                    FetchTopic::default()
                        .with_topic(TopicName(StrBytes::from_static_str(TOPIC)))
                        .with_topic_id(topic_id)
                        .with_partitions(vec![
                            FetchPartition::default()
                                .with_partition(0)
                                .with_current_leader_epoch(-1)
                                .with_partition_max_bytes(1 << 20),
                        ]),
                ]);
            conn.call(&request, version)
        })
    };
    let answer = fetch_from_follower(10).await??;
    let partition = &answer.responses[0].partitions[0];
    assert_eq!(partition.error_code, 6, "NOT_LEADER_OR_FOLLOWER");
    let answer = fetch_from_follower(16).await??;
    let partition = &answer.responses[0].partitions[0];
    assert_eq!(partition.error_code, 0, "a follower serves Fetch v11+");
    assert_eq!(partition.high_watermark, 20);
    assert_eq!(
        partition.records.as_ref().map(|r| r.len()),
        Some(all_batches(&leader_p).len()),
        "every committed batch, from the follower's copy"
    );

    // ListOffsets is the leader's to answer a consumer (-1): a follower's
    // copy may lag. A debugging tool (-2) may ask a follower, and is told
    // the follower's own log end.
    let follower_addr = n2.addr.to_string();
    let answers = tokio::task::spawn_blocking(move || {
        let mut conn = weir_client::Connection::connect(&follower_addr)?;
        let mut answers = Vec::new();
        for replica_id in [-1, -2] {
            let request = ListOffsetsRequest::default()
                .with_replica_id(replica_id.into())
                .with_topics(vec![
                    ListOffsetsTopic::default()
                        .with_name(TopicName(StrBytes::from_static_str(TOPIC)))
                        .with_partitions(vec![
                            ListOffsetsPartition::default()
                                .with_partition_index(0)
                                .with_current_leader_epoch(-1)
                                .with_timestamp(-1),
                        ]),
                ]);
            answers.push(conn.call(&request, 7)?);
        }
        anyhow::Ok(answers)
    })
    .await??;
    let consumer = &answers[0].topics[0].partitions[0];
    assert_eq!(consumer.error_code, 6, "NOT_LEADER_OR_FOLLOWER");
    let debugging = &answers[1].topics[0].partitions[0];
    assert_eq!(
        debugging.error_code, 0,
        "a debugging tool reads any replica"
    );
    assert_eq!(
        debugging.offset,
        n2.partition(topic_id).offsets().log_end,
        "the follower's own log end"
    );

    // The follower stops. An acks=all batch appended now waits for it
    // until, the log end having moved past it for replica.lag.time.max.ms,
    // it leaves the ISR (a follower at the log end of an idle partition
    // stays, as in Kafka): the batch commits with the leader alone, below
    // min.insync.replicas=2, and its producer hears so.
    let n2_dir = n2.stop().await?;
    match send(&to_leader, "old-tail-0").await {
        Err(KafkaError::MessageProduction(RDKafkaErrorCode::NotEnoughReplicasAfterAppend)) => {}
        other => bail!("expected NOT_ENOUGH_REPLICAS_AFTER_APPEND, got {other:?}"),
    }
    assert_eq!(store.assignment().isr, [1], "the controller shrank the ISR");
    // acks=1 still appends: a tail only the old leader holds.
    let acks_one: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", n1.addr.to_string())
        .set("acks", "1")
        .set("retries", "0")
        .create()?;
    for i in 1..5 {
        assert_eq!(send(&acks_one, &format!("old-tail-{i}")).await?, 20 + i);
    }
    // acks=all is now refused up front, and nothing is appended.
    match send(&to_leader, "refused").await {
        Err(KafkaError::MessageProduction(RDKafkaErrorCode::NotEnoughReplicas)) => {}
        other => bail!("expected NOT_ENOUGH_REPLICAS, got {other:?}"),
    }
    assert_eq!(
        leader_p.offsets().log_end,
        25,
        "nothing refused was appended"
    );

    // The controller moves leadership to broker 2 (its log ends at 20) in
    // epoch 2: broker 1 follows, cutting the tail broker 2 never had.
    let l2 = TcpListener::bind("127.0.0.1:0").await?;
    store.set_broker(2, l2.local_addr()?.port());
    let mut a = store.assignment();
    a.leader = 2;
    a.leader_epoch = 2;
    a.isr = vec![2];
    a.partition_epoch += 1;
    store.set_assignment(a);
    let n2 = Node::start(2, &n2_dir, l2, &store).await?;
    n2.broker.apply_replica_assignments()?;
    n1.broker.apply_replica_assignments()?;
    let (old_leader_p, new_leader_p) = (n1.partition(topic_id), n2.partition(topic_id));
    // Broker 1 catches up and the new leader takes it back into the ISR.
    until("broker 1 rejoins the ISR", || {
        store.assignment().isr == [1, 2]
    })
    .await?;
    let to_new_leader = producer(n2.addr);
    for i in 0..5 {
        assert_eq!(send(&to_new_leader, &format!("new-{i}")).await?, 20 + i);
    }
    until("broker 1 copies the new leader's batches", || {
        old_leader_p.offsets().log_end == 25
    })
    .await?;
    let copied = all_batches(&old_leader_p);
    assert_eq!(copied, all_batches(&new_leader_p));
    let text = String::from_utf8_lossy(&copied);
    assert!(
        text.contains("new-4") && !text.contains("old-tail"),
        "{text}"
    );

    n1.stop().await?;
    n2.stop().await?;
    Ok(())
}
