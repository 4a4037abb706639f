//! The load the fault suites run while faults hit the brokers: idempotent
//! acks=all producers sending paced, numbered records into a shared
//! [`History`], a consumer group member committing its position, and the
//! read_committed read-back that hands the history to its checker. The
//! single-node suite (tests/faults.rs) and the cluster's
//! (tests/cluster_faults.rs) differ only in their [`Spec`].

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use super::history::{History, Violation, Violations, Writer};

/// What a suite's load looks like.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    pub topic: &'static str,
    pub partitions: i32,
    /// The consumer group [`GroupCommits`] joins.
    pub group: &'static str,
    /// Producer threads, each its own librdkafka client.
    pub producers: usize,
    /// Records one producer sends per second at most (paces the run so
    /// records are in flight during every fault).
    pub records_per_second_max: u64,
    /// Records one producer sends at most.
    pub records_per_producer_max: u64,
    /// `message.timeout.ms`: long enough to ride out every fault.
    pub message_timeout_ms: &'static str,
    /// `request.timeout.ms`, when not librdkafka's default.
    pub request_timeout_ms: Option<&'static str>,
    /// `queue.buffering.max.messages`: bounds what waits in a producer.
    pub queued_records_max: &'static str,
    /// How long a finishing producer flushes.
    pub flush_timeout: Duration,
    /// How long acknowledgements may take to resume after a fault.
    pub resume_timeout: Duration,
    /// How long the group's committed offsets may take to be answered.
    pub committed_timeout: Duration,
    /// How long reading everything back may take.
    pub read_timeout: Duration,
    /// How often the group member commits its position.
    pub commit_interval: Duration,
}

/// The payload of record `id`.
pub fn payload(id: u64) -> String {
    format!("record-{id}")
}

/// The id in a payload written by [`payload`].
pub fn id_of(payload: Option<&[u8]>) -> Option<u64> {
    std::str::from_utf8(payload?)
        .ok()?
        .strip_prefix("record-")?
        .parse()
        .ok()
}

/// A shared value, even if a thread panicked while holding it.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One acknowledgement, and when its delivery report came.
#[derive(Debug, Clone, Copy)]
pub struct Ack {
    pub id: u64,
    pub partition: i32,
    pub at: Instant,
}

/// A producer context that writes every delivery report into the history,
/// and each acknowledgement's time into `acks` (for failover times).
struct Recorder {
    history: Arc<Mutex<History>>,
    acks: Arc<Mutex<Vec<Ack>>>,
}

impl ClientContext for Recorder {
    /// librdkafka's logs on stderr (shown under a failing test), with its
    /// debug log when `WEIR_TEST_RDKAFKA_DEBUG` names debug contexts (say
    /// `eos,msg`), to follow a failure's client side.
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        let at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        eprintln!(
            "{}.{:03} librdkafka {level:?} {fac}: {log_message}",
            at.as_secs(),
            at.subsec_millis()
        );
    }
}

impl ProducerContext for Recorder {
    type DeliveryOpaque = Box<u64>;

    fn delivery(&self, result: &DeliveryResult<'_>, id: Self::DeliveryOpaque) {
        let at = Instant::now();
        match result {
            Ok(message) => {
                lock(&self.history).acked(*id, message.partition(), message.offset());
                lock(&self.acks).push(Ack {
                    id: *id,
                    partition: message.partition(),
                    at,
                });
            }
            Err((err, _)) => lock(&self.history).maybe(*id, err.to_string()),
        }
    }
}

/// Producers sending paced, numbered records (partition = id mod the
/// spec's partitions) into a shared history until stopped.
pub struct Workload {
    spec: Spec,
    history: Arc<Mutex<History>>,
    acks: Arc<Mutex<Vec<Ack>>>,
    next_id: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    producers: Vec<JoinHandle<anyhow::Result<()>>>,
}

impl Workload {
    /// Start the producers; they stop by themselves after `time_max`.
    pub fn start(spec: Spec, bootstrap: &str, time_max: Duration) -> anyhow::Result<Self> {
        let history = Arc::new(Mutex::new(History::new()));
        let acks = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let next_id = Arc::new(AtomicU64::new(0));
        let mut producers = Vec::new();
        for _ in 0..spec.producers {
            let mut config = super::producer_config(bootstrap);
            config
                .set("enable.idempotence", "true")
                .set("acks", "all")
                .set("message.timeout.ms", spec.message_timeout_ms)
                .set("queue.buffering.max.messages", spec.queued_records_max);
            if let Some(timeout) = spec.request_timeout_ms {
                config.set("request.timeout.ms", timeout);
            }
            if let Ok(contexts) = std::env::var("WEIR_TEST_RDKAFKA_DEBUG") {
                config
                    .set("debug", contexts)
                    .set_log_level(rdkafka::config::RDKafkaLogLevel::Debug);
            }
            let producer: BaseProducer<Recorder> = config
                .create_with_context(Recorder {
                    history: history.clone(),
                    acks: acks.clone(),
                })
                .context("cannot create a producer")?;
            let (history, stop, next_id) = (history.clone(), stop.clone(), next_id.clone());
            producers.push(std::thread::spawn(move || {
                produce(&spec, &producer, &history, &stop, &next_id, time_max)
            }));
        }
        Ok(Self {
            spec,
            history,
            acks,
            next_id,
            stop,
            producers,
        })
    }

    pub fn acked(&self) -> usize {
        lock(&self.history).acked_count()
    }

    /// The id the next record will get: every id from here on is sent
    /// after this call.
    pub fn next_id(&self) -> u64 {
        self.next_id.load(Ordering::SeqCst)
    }

    /// Take an id for a record sent by another producer, recorded as sent
    /// (its fate unknown unless reported).
    pub fn reserve_id(&self) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        lock(&self.history).sent(id);
        id
    }

    pub fn history(&self) -> &Mutex<History> {
        &self.history
    }

    fn check_producing(&self) -> anyhow::Result<()> {
        if self.producers.iter().any(JoinHandle::is_finished) {
            bail!("a producer stopped early");
        }
        Ok(())
    }

    /// When every one of `partitions` had an acknowledgement of a record
    /// with an id of at least `id_min` (the latest of their first ones).
    pub fn wait_for_acks_on(
        &self,
        partitions: &[i32],
        id_min: u64,
        timeout: Duration,
    ) -> anyhow::Result<Instant> {
        let mut resumed = None;
        super::wait_until(timeout, "acks=all produce to resume", || {
            self.check_producing()?;
            let acks = lock(&self.acks);
            let mut latest: Option<Instant> = None;
            for &p in partitions {
                let first = acks
                    .iter()
                    .filter(|a| a.partition == p && a.id >= id_min)
                    .map(|a| a.at)
                    .min();
                match first {
                    Some(at) => latest = Some(latest.map_or(at, |l| l.max(at))),
                    None => return Ok(false),
                }
            }
            resumed = latest;
            Ok(latest.is_some())
        })?;
        resumed.context("no partition to wait for")
    }

    /// Wait until more than `before` records are acknowledged (producers carry on).
    pub fn wait_for_acks_above(&self, before: usize) -> anyhow::Result<()> {
        super::wait_until(
            self.spec.resume_timeout,
            "acknowledgements to resume",
            || {
                self.check_producing()?;
                Ok(self.acked() > before)
            },
        )
    }

    /// Stop and flush the producers; the history of everything they sent.
    pub fn finish(self) -> anyhow::Result<Arc<Mutex<History>>> {
        self.stop.store(true, Ordering::SeqCst);
        for producer in self.producers {
            producer
                .join()
                .map_err(|_| anyhow::anyhow!("a producer thread panicked"))??;
        }
        Ok(self.history)
    }
}

/// Send paced records until `stop` or `time_max`, then flush. A record
/// whose send is refused outright is "maybe"; one handed to librdkafka is
/// "sent" until its delivery report.
fn produce(
    spec: &Spec,
    producer: &BaseProducer<Recorder>,
    history: &Mutex<History>,
    stop: &AtomicBool,
    next_id: &AtomicU64,
    time_max: Duration,
) -> anyhow::Result<()> {
    let start = Instant::now();
    let mut sent = 0u64;
    while !stop.load(Ordering::SeqCst)
        && sent < spec.records_per_producer_max
        && start.elapsed() < time_max
    {
        if let Some((code, reason)) = producer.client().fatal_error() {
            bail!("the idempotent producer hit a fatal error: {code:?}: {reason}");
        }
        let allowed =
            u64::try_from(start.elapsed().as_millis())? * spec.records_per_second_max / 1000;
        if sent >= allowed {
            producer.poll(Duration::from_millis(5));
            continue;
        }
        let id = next_id.fetch_add(1, Ordering::SeqCst);
        let partition = i32::try_from(id % u64::try_from(spec.partitions)?)?;
        let value = payload(id);
        lock(history).sent(id);
        let mut record: BaseRecord<'_, [u8], [u8], Box<u64>> =
            BaseRecord::with_opaque_to(spec.topic, Box::new(id))
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
                )) if !stop.load(Ordering::SeqCst) && start.elapsed() < time_max => {
                    record = back;
                    producer.poll(Duration::from_millis(10));
                }
                Err((err, _)) => {
                    lock(history).maybe(id, format!("send refused: {err}"));
                    break;
                }
            }
        }
        sent += 1;
        producer.poll(Duration::ZERO);
    }
    // Records still unreported after the flush stay "maybe".
    let _ = producer.flush(spec.flush_timeout);
    if let Some((code, reason)) = producer.client().fatal_error() {
        bail!("the idempotent producer hit a fatal error: {code:?}: {reason}");
    }
    Ok(())
}

/// A consumer group member consuming the spec's topic and committing its
/// position while the faults run; remembers the last offset of each
/// partition whose commit was acknowledged, and every time it was moved
/// back below one.
pub struct GroupCommits {
    state: Arc<Mutex<GroupState>>,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<anyhow::Result<usize>>,
}

/// What the group member saw.
#[derive(Debug, Default)]
struct GroupState {
    /// Per partition, the last offset whose commit was acknowledged.
    committed: BTreeMap<i32, i64>,
    /// Reads below an acknowledged commit: the member was moved back past
    /// what the group had committed (a commit lost, or a reset).
    rewinds: Vec<String>,
    /// The first errors the consumer reported (for the failure message).
    errors: Vec<String>,
}

/// Consumer errors (and rewinds) kept for a failure message.
const GROUP_ERRORS_KEPT_MAX: usize = 20;

impl GroupCommits {
    pub fn start(spec: Spec, bootstrap: &str, time_max: Duration) -> anyhow::Result<Self> {
        let mut config = group_config(&spec, bootstrap);
        config.set("session.timeout.ms", "6000");
        let consumer: BaseConsumer = config.create()?;
        consumer.subscribe(&[spec.topic])?;
        let state = Arc::new(Mutex::new(GroupState::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (state, stop) = (state.clone(), stop.clone());
            std::thread::spawn(move || {
                commit_while_consuming(&spec, &consumer, &state, &stop, time_max)
            })
        };
        Ok(Self {
            state,
            stop,
            thread,
        })
    }

    /// The offsets whose commit was acknowledged so far.
    pub fn acknowledged(&self) -> BTreeMap<i32, i64> {
        lock(&self.state).committed.clone()
    }

    /// Fail if the member was ever moved back below an acknowledged commit.
    pub fn check_no_rewind(&self, when: &str) -> anyhow::Result<()> {
        let state = lock(&self.state);
        if state.rewinds.is_empty() {
            return Ok(());
        }
        bail!(
            "{when}: the group member was moved back below acknowledged commits:\n  {}\nconsumer errors: {:?}",
            state.rewinds.join("\n  "),
            state.errors
        )
    }

    /// Stop; how many commits were acknowledged.
    pub fn finish(self) -> anyhow::Result<usize> {
        self.stop.store(true, Ordering::SeqCst);
        let commits = self
            .thread
            .join()
            .map_err(|_| anyhow::anyhow!("the group consumer thread panicked"))??;
        let state = lock(&self.state);
        if !state.rewinds.is_empty() {
            bail!(
                "the group member was moved back below acknowledged commits:\n  {}\nconsumer errors: {:?}",
                state.rewinds.join("\n  "),
                state.errors
            );
        }
        Ok(commits)
    }
}

fn group_config(spec: &Spec, bootstrap: &str) -> ClientConfig {
    let mut config = super::consumer_config(bootstrap);
    config
        .set("group.id", spec.group)
        .set("isolation.level", "read_committed");
    config
}

/// Consume and commit the position every `commit_interval` until `stop`;
/// a commit that fails (the broker is down, the coordinator moves) is
/// simply retried later. Each partition is committed on its own: librdkafka
/// reports a commit of several partitions as a success when only some of
/// them failed.
fn commit_while_consuming(
    spec: &Spec,
    consumer: &BaseConsumer,
    state: &Mutex<GroupState>,
    stop: &AtomicBool,
    time_max: Duration,
) -> anyhow::Result<usize> {
    let mut position: BTreeMap<i32, i64> = BTreeMap::new();
    let mut last_commit = Instant::now();
    let mut commits = 0;
    let start = Instant::now();
    while !stop.load(Ordering::SeqCst) && start.elapsed() < time_max {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => {
                let (p, offset) = (message.partition(), message.offset());
                let mut state = lock(state);
                // Reading again from the last acknowledged commit after a
                // rebalance is at-least-once; from below it is not.
                let next = position.get(&p).copied().unwrap_or(-1);
                if let Some(&committed) = state.committed.get(&p)
                    && offset < committed
                    && offset < next
                    && state.rewinds.len() < GROUP_ERRORS_KEPT_MAX
                {
                    state.rewinds.push(format!(
                        "partition {p}: read offset {offset} after {}, below the acknowledged commit {committed}",
                        next - 1
                    ));
                }
                position.insert(p, offset + 1);
            }
            Some(Err(err)) => {
                let mut state = lock(state);
                if state.errors.len() < GROUP_ERRORS_KEPT_MAX {
                    state.errors.push(err.to_string());
                }
            }
            None => {}
        }
        if last_commit.elapsed() < spec.commit_interval || position.is_empty() {
            continue;
        }
        last_commit = Instant::now();
        // The consumer's own position, not the offsets read so far: after a
        // rebalance it starts again from what the group had committed, and
        // committing an older read would claim progress the member lost.
        let positions = consumer.position()?;
        for element in positions.elements() {
            let (p, Offset::Offset(o)) = (element.partition(), element.offset()) else {
                continue;
            };
            let mut offsets = TopicPartitionList::new();
            offsets.add_partition_offset(spec.topic, p, Offset::Offset(o))?;
            if consumer.commit(&offsets, CommitMode::Sync).is_ok() {
                commits += 1;
                lock(state).committed.insert(p, o);
            }
        }
    }
    Ok(commits)
}

/// Check that the group's committed offsets, as the broker answers them
/// now, are at least the acknowledged ones (`want`).
pub fn assert_committed_at_least(
    spec: &Spec,
    bootstrap: &str,
    want: &BTreeMap<i32, i64>,
    when: &str,
) -> anyhow::Result<()> {
    if want.is_empty() {
        return Ok(());
    }
    let consumer: BaseConsumer = group_config(spec, bootstrap).create()?;
    let mut partitions = TopicPartitionList::new();
    for &p in want.keys() {
        partitions.add_partition(spec.topic, p);
    }
    let mut last = String::new();
    super::wait_until(
        spec.committed_timeout,
        "the group's committed offsets",
        || {
            let got = match consumer.committed_offsets(partitions.clone(), super::CLIENT_TIMEOUT)
            {
                Ok(got) => got,
                // The coordinator may be loading or moving; ask again.
                Err(err) => {
                    last = err.to_string();
                    return Ok(false);
                }
            };
            for (&p, &offset) in want {
                let answer = got
                    .find_partition(spec.topic, p)
                    .map(|e| e.offset())
                    .unwrap_or(Offset::Invalid);
                match answer {
                    Offset::Offset(o) if o >= offset => {}
                    other => bail!(
                        "{when}: partition {p}'s committed offset is {other:?}, but {offset} was acknowledged"
                    ),
                }
            }
            Ok(true)
        },
    )
    .with_context(|| format!("{when} (last error: {last})"))
}

/// Read every partition from the start up to its high watermark with a
/// read_committed consumer, recording each record and the watermarks seen
/// after.
pub fn read_everything(
    spec: &Spec,
    bootstrap: &str,
    history: &Mutex<History>,
) -> anyhow::Result<()> {
    let topic = spec.topic;
    let mut config = super::consumer_config(bootstrap);
    config.set("isolation.level", "read_committed");
    let consumer: BaseConsumer = config.create()?;
    let mut assignment = TopicPartitionList::new();
    let mut ends = HashMap::new();
    for p in 0..spec.partitions {
        let (_, high) = consumer
            .fetch_watermarks(topic, p, super::CLIENT_TIMEOUT)
            .with_context(|| format!("cannot list offsets of {topic}/{p}"))?;
        ends.insert(p, high);
        assignment.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    consumer.assign(&assignment)?;
    let mut next: HashMap<i32, i64> = HashMap::new();
    let done = |next: &HashMap<i32, i64>| {
        ends.iter()
            .all(|(p, end)| next.get(p).copied().unwrap_or(0) >= *end)
    };
    let deadline = Instant::now() + spec.read_timeout;
    while !done(&next) {
        if Instant::now() > deadline {
            bail!("reading back timed out: next offsets {next:?}, wanted {ends:?}");
        }
        match consumer.poll(Duration::from_millis(200)) {
            None => {}
            Some(Err(err)) => bail!("consumer error: {err}"),
            Some(Ok(message)) => {
                next.insert(message.partition(), message.offset() + 1);
                lock(history).read(
                    message.partition(),
                    message.offset(),
                    id_of(message.payload()),
                );
            }
        }
    }
    for p in 0..spec.partitions {
        let (_, high) = consumer
            .fetch_watermarks(topic, p, super::CLIENT_TIMEOUT)
            .with_context(|| format!("cannot list offsets of {topic}/{p}"))?;
        lock(history).high_watermark(p, high);
    }
    Ok(())
}

/// Stop the workload and the group (if any), read everything back and run
/// the checker.
pub fn finish_and_check(
    bootstrap: &str,
    workload: Workload,
    group: Option<GroupCommits>,
) -> anyhow::Result<()> {
    let commits = match group {
        Some(group) => {
            let commits = group.finish()?;
            if commits == 0 {
                bail!("the group acknowledged no commit: the offsets checks proved nothing");
            }
            Some(commits)
        }
        None => None,
    };
    let spec = workload.spec;
    let history = workload.finish()?;
    read_everything(&spec, bootstrap, &history)?;
    let history = lock(&history);
    let checked = match history.check() {
        Ok(summary) => Ok(summary),
        // Copies in different producer epochs are the client's; ask the
        // brokers who wrote each.
        Err(violations) => {
            let (writers, diagnosis) = duplicate_writers(&spec, bootstrap, &violations);
            history
                .check_with(&writers)
                .map_err(|violations| anyhow::anyhow!("{violations}{diagnosis}"))
        }
    };
    let summary = checked?;
    match commits {
        Some(commits) => eprintln!("history: {summary}; group: {commits} commits"),
        None => eprintln!("history: {summary}"),
    }
    if summary.acked == 0 {
        bail!("nothing was acknowledged: the test proved nothing");
    }
    Ok(())
}

/// Who wrote each copy of every duplicate `violations` name: the producer
/// id and epoch of the batch holding it, fetched raw from the partition's
/// leader; and the same as text, with each copy's sequence number, for a
/// failure message. A copy whose writer cannot be fetched is left out (its
/// duplicate then stands), the reason in the text.
fn duplicate_writers(
    spec: &Spec,
    bootstrap: &str,
    violations: &Violations,
) -> (HashMap<(i32, i64), Writer>, String) {
    let mut writers = HashMap::new();
    let mut text = String::new();
    for violation in &violations.0 {
        let Violation::Duplicate { id, reads } = violation else {
            continue;
        };
        text.push_str(&format!("\n  copies of record {id}:"));
        for &(partition, offset) in reads {
            match batch_writer(spec.topic, bootstrap, partition, offset) {
                Ok((writer, sequence)) => {
                    writers.insert((partition, offset), writer);
                    text.push_str(&format!(
                        " [{partition}/{offset}: producer {} epoch {} sequence {sequence}]",
                        writer.producer_id, writer.epoch
                    ));
                }
                Err(err) => text.push_str(&format!(" [{partition}/{offset}: unknown ({err:#})]")),
            }
        }
    }
    (writers, text)
}

/// Who wrote the record at `partition`/`offset`, and its sequence number.
fn batch_writer(
    topic: &str,
    bootstrap: &str,
    partition: i32,
    offset: i64,
) -> anyhow::Result<(Writer, i32)> {
    use kafka_protocol::messages::FetchRequest;
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::records::RecordBatchDecoder;

    let mut client = weir_client::Client::connect(bootstrap, &weir_client::Config::default())?;
    let metadata = client.metadata(Some(&[topic.to_owned()]))?;
    let leader = metadata
        .topics
        .first()
        .and_then(|t| t.partitions.iter().find(|p| p.partition_index == partition))
        .map(|p| p.leader_id.0)
        .context("no leader in the metadata")?;
    let request = FetchRequest::default()
        .with_replica_id((-1).into())
        .with_max_wait_ms(0)
        .with_min_bytes(0)
        .with_max_bytes(1 << 20)
        .with_isolation_level(1)
        .with_topics(vec![
            FetchTopic::default()
                .with_topic(weir_client::str_bytes(topic).into())
                .with_partitions(vec![
                    FetchPartition::default()
                        .with_partition(partition)
                        .with_fetch_offset(offset)
                        .with_partition_max_bytes(1 << 20),
                ]),
        ]);
    let response = client.send_to(leader, &request, 12)?;
    let answer = response
        .responses
        .first()
        .and_then(|t| t.partitions.first())
        .context("no partition in the fetch answer")?;
    if answer.error_code != 0 {
        bail!("fetch error {}", answer.error_code);
    }
    let mut bytes = answer.records.clone().unwrap_or_default();
    RecordBatchDecoder::decode_all(&mut bytes)?
        .into_iter()
        .flat_map(|set| set.records)
        .find(|r| r.offset == offset)
        .map(|r| {
            let writer = Writer {
                producer_id: r.producer_id,
                epoch: r.producer_epoch,
            };
            (writer, r.sequence)
        })
        .context("the fetch did not hold the offset")
}
