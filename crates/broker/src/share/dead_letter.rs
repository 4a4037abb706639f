//! The dead-letter writer (KIP-1191) and the lock-expiry driver: the share
//! groups' background work on this broker.
//!
//! **Dead letters.** A record a member rejects, or one released at the
//! delivery count limit, is archived in the dead-lettering state
//! (`partition`), and the change that put it there hands the writer a
//! [`Job`]. The writer waits until that state is durable, then appends one
//! dead letter per record to the group's dead-letter topic
//! (`errors.deadletterqueue.topic.name`, else `<prefix><group>`), in
//! partition `source partition mod partitions`, waits until it is
//! committed, and only then confirms: the record is archived for good and
//! the share-partition start offset may pass it.
//!
//! **Exactly once.** The order makes a crash safe at every point. Before
//! the dead-lettering state is durable, no dead letter exists, and after a
//! restart the record is delivered again (as any acquired record is). Once
//! it is durable, a restart finds the record still dead-lettering and hands
//! it to the writer with [`Job::look_first`]: the writer reads the
//! dead-letter partition from the time the record was archived (each
//! dead letter is stamped no earlier) for a dead letter naming the same
//! group, topic, partition and offset, and writes only the ones it does not
//! find.
//!
//! **What a dead letter carries**: the headers `__dlq.errors.topic`,
//! `__dlq.errors.partition`, `__dlq.errors.offset`, `__dlq.errors.group`,
//! `__dlq.errors.delivery.count` and `__dlq.errors.message` (why), as UTF-8
//! text; with `errors.deadletterqueue.copy.record.enable`, also the
//! record's key, value and headers (the headers first).
//!
//! **When no dead letter can be written**, the record is still given up
//! on (archived), and an error is logged saying what to fix: the group has
//! no dead-letter topic (set empty), the topic is missing and
//! `errors.deadletterqueue.auto.create.topics.enable` is off, or the topic
//! does not have `errors.deadletterqueue.group.enable=true`. A failed
//! write is retried, with a growing wait, the next attempt looking first.
//!
//! **On a cluster** the dead-letter partition may be led by another
//! broker: the dead letters are produced to it (acks=all) over the peer
//! connections, and a look reads it there as a consumer (ListOffsets by
//! time, then Fetch), up to its high watermark. So a produce retried after
//! a lost answer, or a dead letter whose share-partition moved to a new
//! leader before it was confirmed, is found and not written again; only a
//! dead letter appended but not yet committed when the look reads may be
//! written twice.
//!
//! **Memory.** At most [`WRITERS`] jobs are written at once, each attempt
//! building at most [`ATTEMPT_BYTES_MAX`] of dead letters (and holding one
//! decoded batch of the source partition for copies). Jobs waiting in the
//! queue are a few words per record, and each record in one holds a slot
//! of its share-partition, whose slots are bounded.
//!
//! **Lock expiry.** Locks also expire when nobody fetches: every
//! [`EXPIRY_TICK`] the driver releases the expired locks of every
//! share-partition that may have one, so a record at the delivery count
//! limit is dead-lettered, and the state persisted, without a fetch.

use std::collections::HashSet;
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use tokio::sync::{Semaphore, mpsc};
use weir_storage::{CommitWait, Partition, PartitionId, batches};

use super::manager::SharePartitionKey;
use super::partition::{ArchiveReason, DeadLetter};
use crate::Broker;
use crate::replica::Leadership;
use crate::topic_config::{DLQ_GROUP_ENABLE, dlq_group_enabled};

/// Header: the record's topic.
pub(crate) const HEADER_TOPIC: &str = "__dlq.errors.topic";
/// Header: the record's partition.
pub(crate) const HEADER_PARTITION: &str = "__dlq.errors.partition";
/// Header: the record's offset.
pub(crate) const HEADER_OFFSET: &str = "__dlq.errors.offset";
/// Header: the share group that gave it up.
pub(crate) const HEADER_GROUP: &str = "__dlq.errors.group";
/// Header: how often it was delivered.
pub(crate) const HEADER_DELIVERY_COUNT: &str = "__dlq.errors.delivery.count";
/// Header: why.
pub(crate) const HEADER_MESSAGE: &str = "__dlq.errors.message";

/// How often expired locks are looked for.
pub(crate) const EXPIRY_TICK: Duration = Duration::from_millis(250);
/// Jobs written at once.
const WRITERS: usize = 8;
/// Dead letters one attempt builds before it writes them (a job's next
/// attempt goes on from there): with [`WRITERS`], what the writer holds.
const ATTEMPT_BYTES_MAX: usize = 4 << 20;
/// The batch bound for a dead-letter partition led elsewhere (Kafka's
/// `max.message.bytes` default).
const DEFAULT_MESSAGE_BYTES: usize = 1_048_588;
/// First wait before a job is tried again; it doubles up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(10);
/// How far before a record was archived the look for its dead letter
/// starts: room for the wall clock stepping back across a restart.
const LOOK_SLACK_MS: i64 = 10 * 60 * 1000;
/// Bytes read per step, looking for dead letters or reading a record.
const READ_BYTES: usize = 1 << 20;

/// Dead letters to write for one share-partition.
#[derive(Debug)]
pub(crate) struct Job {
    pub key: SharePartitionKey,
    pub letters: Vec<DeadLetter>,
    /// Resolves once the dead-lettering state is durable; nothing is
    /// written before.
    pub after: Option<super::manager::StateWait>,
    /// The letters may have been written already (a restart, or a write
    /// whose outcome is unknown): look for them first.
    pub look_first: bool,
}

/// What one attempt at a job came to. An attempt covers the job's first
/// records (in offset order) until it has built [`ATTEMPT_BYTES_MAX`] of
/// dead letters; the next attempt goes on from there.
enum Attempt {
    /// Nothing (more) to write for the records covered: confirm these
    /// offsets now.
    Done(Vec<i64>),
    /// Appended here: confirm these offsets once the wait resolves.
    Appended(Vec<i64>, CommitWait),
    /// The dead-letter partition is led by another broker: produce these
    /// batches there (acks=all), then confirm these offsets.
    Forward {
        offsets: Vec<i64>,
        leader: i32,
        topic: String,
        partition: i32,
        batches: Vec<Bytes>,
    },
    /// Try again later.
    Retry(String),
}

/// Run the share groups' background work until the broker is dropped.
pub(crate) async fn drive(broker: Weak<Broker>, mut jobs: mpsc::UnboundedReceiver<Job>) {
    let writers = Arc::new(Semaphore::new(WRITERS));
    let mut tick = tokio::time::interval(EXPIRY_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            job = jobs.recv() => {
                let Some(job) = job else { return };
                let Ok(permit) = writers.clone().acquire_owned().await else { return };
                let broker = broker.clone();
                tokio::spawn(async move {
                    write_job(broker, job).await;
                    drop(permit);
                });
            }
            _ = tick.tick() => {
                let Some(b) = broker.upgrade() else { return };
                let shares = b.shares().clone();
                drop(b);
                if crate::blocking::run(move || shares.expire_due()).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Carry one job to its end: every record's dead letter written and
/// confirmed, or given up on.
async fn write_job(broker: Weak<Broker>, mut job: Job) {
    if let Some(after) = job.after.take()
        && let Err(e) = after.wait().await
    {
        // The state was not made durable (the log failed): nothing is
        // written, and a restart resolves the records from the state it
        // last made durable.
        tracing::warn!(group = %job.key.group, error = %e,
            "dead letters wait for a restart: their share-partition state is not durable");
        return;
    }
    job.letters.sort_by_key(|l| l.offset);
    let key = job.key.clone();
    let mut letters: Arc<[DeadLetter]> = job.letters.into();
    let mut retry = RETRY_FIRST;
    let mut look_first = job.look_first;
    while !letters.is_empty() {
        let Some(b) = broker.upgrade() else { return };
        let shares = b.shares().clone();
        let attempt = {
            let (b, key, letters) = (b.clone(), key.clone(), letters.clone());
            crate::blocking::run(move || attempt(&b, &key, &letters, look_first)).await
        };
        let Ok(attempt) = attempt else { return };
        let outcome = match attempt {
            Attempt::Done(offsets) => Ok(offsets),
            Attempt::Appended(offsets, committed) => committed
                .wait()
                .await
                .map(|()| offsets)
                .map_err(|e| format!("the dead letters were not committed: {e}")),
            Attempt::Forward {
                offsets,
                leader,
                topic,
                partition,
                batches,
            } => {
                let forwarded = forward(&b, leader, &topic, partition, batches).await;
                #[cfg(feature = "failpoints")]
                if forwarded.is_ok() {
                    let paused = || fail::fail_point!("share::dead_letters_forwarded");
                    let _ = crate::blocking::run(paused).await;
                }
                forwarded.map(|()| offsets)
            }
            Attempt::Retry(why) => Err(why),
        };
        drop(b);
        match outcome {
            Ok(offsets) => {
                let covered = offsets.len();
                confirm(&shares, &key, offsets).await;
                letters = letters[covered.min(letters.len())..].into();
                retry = RETRY_FIRST;
            }
            Err(why) => {
                tracing::warn!(group = %key.group, partition = key.partition,
                    records = letters.len(), error = %why, retry_ms = retry.as_millis() as u64,
                    "cannot write dead letters yet; trying again");
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(RETRY_MAX);
                // Whatever the failed attempt appended may be in the log.
                look_first = true;
            }
        }
    }
}

async fn confirm(shares: &Arc<super::ShareManager>, key: &SharePartitionKey, offsets: Vec<i64>) {
    let (shares, key) = (shares.clone(), key.clone());
    let _ = crate::blocking::run(move || shares.confirm_dead_letters(&key, &offsets)).await;
}

/// Produce `batches` to `topic`-`partition` on broker `leader`, acks=all.
async fn forward(
    broker: &Broker,
    leader: i32,
    topic: &str,
    partition: i32,
    batches: Vec<Bytes>,
) -> Result<(), String> {
    use kafka_protocol::messages::ProduceRequest;
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    for batch in batches {
        let request = ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(30_000)
            .with_topic_data(vec![
                TopicProduceData::default()
                    .with_name(kafka_protocol::messages::TopicName(text(topic)))
                    .with_partition_data(vec![
                        PartitionProduceData::default()
                            .with_index(partition)
                            .with_records(Some(batch)),
                    ]),
            ]);
        let answer = broker
            .peers
            .call(leader, &request, PRODUCE_VERSION)
            .await
            .map_err(|e| format!("producing dead letters to broker {leader}: {e}"))?;
        let code = answer
            .responses
            .iter()
            .flat_map(|t| t.partition_responses.iter())
            .map(|p| p.error_code)
            .find(|c| *c != 0);
        if let Some(code) = code {
            return Err(format!(
                "broker {leader} refused dead letters for {topic}-{partition}: error {code}"
            ));
        }
    }
    Ok(())
}

/// Produce's version for forwarded dead letters.
const PRODUCE_VERSION: i16 = 9;

/// One attempt at writing dead letters for `letters` (in offset order) of
/// `key`. Blocks on file I/O.
fn attempt(
    broker: &Broker,
    key: &SharePartitionKey,
    letters: &[DeadLetter],
    look_first: bool,
) -> Attempt {
    let shares = broker.shares();
    let all: Vec<i64> = letters.iter().map(|l| l.offset).collect();
    if !shares.holds(key) {
        // The group was deleted: its records are nobody's any more.
        return Attempt::Done(all);
    }
    let settings = shares.group_settings(&key.group);
    let Some(dlq) = settings.dead_letter else {
        return Attempt::Done(all);
    };
    let Some(source) = broker.topic_by_id(key.topic_id) else {
        tracing::warn!(group = %key.group, topic_id = %key.topic_id,
            "records given up on are archived without dead letters: their topic was deleted");
        return Attempt::Done(all);
    };
    let topic = match dead_letter_topic(broker, &dlq.name) {
        Ok(Some(topic)) => topic,
        Ok(None) => {
            tracing::error!(group = %key.group, topic = %dlq.name, records = all.len(),
                "records given up on are archived WITHOUT dead letters: the dead-letter topic \
                 does not exist and errors.deadletterqueue.auto.create.topics.enable is false. \
                 Create it with {DLQ_GROUP_ENABLE}=true, or set the group's \
                 errors.deadletterqueue.topic.name");
            return Attempt::Done(all);
        }
        Err(why) => return Attempt::Retry(why),
    };
    if topic.view.is_some() || !dlq_group_enabled(&topic.meta.configs) {
        tracing::error!(group = %key.group, topic = %dlq.name, records = all.len(),
            "records given up on are archived WITHOUT dead letters: the dead-letter topic \
             does not take them. Set {DLQ_GROUP_ENABLE}=true on it (weir topic alter-config)");
        return Attempt::Done(all);
    }
    let index = key.partition % topic.meta.partitions.max(1);
    let id = PartitionId {
        topic_id: topic.meta.id,
        partition: index,
    };
    // Here, or produced to the leader.
    let (partition, leader) = match broker.replicas.leadership(id) {
        Leadership::NotLeader { leader, .. } if leader >= 0 => (None, leader),
        Leadership::NotLeader { .. } => {
            return Attempt::Retry(format!("{}-{index} has no leader", dlq.name));
        }
        _ => match crate::topics::local_partition(&topic, index) {
            Ok(p) => (Some(p), -1),
            Err(e) => return Attempt::Retry(e.message),
        },
    };
    let origin = Origin {
        group: &key.group,
        topic: &source.meta.name,
        partition: key.partition,
    };
    let found = match (&partition, look_first) {
        (Some(p), true) => written(p, &origin, letters),
        (None, true) => written_at(
            broker,
            leader,
            (&topic.meta.name, topic.meta.id, index),
            &origin,
            letters,
        ),
        (_, false) => Ok(HashSet::new()),
    };
    let found = match found {
        Ok(found) => found,
        Err(why) => return Attempt::Retry(why),
    };
    let source_partition = dlq
        .copy_record
        .then(|| crate::topics::local_partition(&source, key.partition).ok())
        .flatten();
    let limit = partition
        .as_ref()
        .map_or(DEFAULT_MESSAGE_BYTES, |p| {
            usize::try_from(p.config().max_message_bytes).unwrap_or(usize::MAX)
        })
        .saturating_sub(weir_storage::RecordBatchHeader::BYTES);
    let now_ms = shares.now_ms();
    let mut copies = Copies::default();
    let mut covered = Vec::new();
    let mut chunk: Vec<Record> = Vec::new();
    let (mut chunk_bytes, mut built) = (0, 0);
    let mut batches = Vec::new();
    for letter in letters {
        if built >= ATTEMPT_BYTES_MAX {
            break;
        }
        covered.push(letter.offset);
        if found.contains(&letter.offset) {
            continue;
        }
        let mut record = dead_letter_record(&origin, letter, now_ms);
        if let Some(p) = &source_partition {
            match copies.get(p, letter.offset) {
                Ok(Some(original)) if framed_len(&original) + framed_len(&record) < limit => {
                    record.key = original.key;
                    record.value = original.value;
                    let mut headers = original.headers;
                    headers.extend(record.headers);
                    record.headers = headers;
                }
                Ok(Some(_)) => tracing::warn!(group = %key.group, offset = letter.offset,
                    "a dead letter goes without its record: the copy is over the dead-letter \
                     topic's max.message.bytes"),
                Ok(None) => {}
                Err(why) => return Attempt::Retry(why),
            }
        }
        let len = framed_len(&record);
        if !chunk.is_empty() && chunk_bytes + len > limit {
            match encode(&chunk) {
                Ok(b) => batches.push(b),
                Err(why) => return Attempt::Retry(why),
            }
            chunk.clear();
            chunk_bytes = 0;
        }
        chunk_bytes += len;
        built += len;
        chunk.push(record);
    }
    if !chunk.is_empty() {
        match encode(&chunk) {
            Ok(b) => batches.push(b),
            Err(why) => return Attempt::Retry(why),
        }
    }
    drop(chunk);
    if batches.is_empty() {
        return Attempt::Done(covered);
    }
    let Some(partition) = partition else {
        return Attempt::Forward {
            offsets: covered,
            leader,
            topic: dlq.name,
            partition: index,
            batches,
        };
    };
    #[cfg(feature = "failpoints")]
    fail::fail_point!("share::dead_letters_appending");
    let mut committed = None;
    for batch in batches {
        match partition.append(batch) {
            Ok(outcome) => committed = Some(outcome.committed),
            Err(e) => return Attempt::Retry(format!("appending to {}-{index}: {e}", dlq.name)),
        }
    }
    #[cfg(feature = "failpoints")]
    fail::fail_point!("share::dead_letters_appended");
    match committed {
        Some(wait) => Attempt::Appended(covered, wait),
        None => Attempt::Done(covered),
    }
}

/// The dead-letter topic `name`, created when missing and allowed;
/// `Ok(None)` when missing and not allowed.
fn dead_letter_topic(
    broker: &Broker,
    name: &str,
) -> Result<Option<Arc<crate::topics::TopicState>>, String> {
    if let Some(topic) = broker.topic(name) {
        return Ok(Some(topic));
    }
    if !broker.config().group.dlq_auto_create {
        return Ok(None);
    }
    let configs =
        std::collections::BTreeMap::from([(DLQ_GROUP_ENABLE.to_string(), "true".to_string())]);
    match broker.create_topic(name, -1, -1, configs, false) {
        Ok(_) => tracing::info!(topic = name, "created a dead-letter topic"),
        Err(e) if e.code == kafka_protocol::ResponseError::TopicAlreadyExists => {}
        Err(e) => {
            return Err(format!(
                "cannot create dead-letter topic {name}: {}",
                e.message
            ));
        }
    }
    broker
        .topic(name)
        .map(Some)
        .ok_or_else(|| format!("dead-letter topic {name} is not open on this broker yet"))
}

/// Where a dead letter's record came from.
struct Origin<'a> {
    group: &'a str,
    topic: &'a str,
    partition: i32,
}

fn text(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

/// Why a record was given up on, as `__dlq.errors.message` says.
pub(crate) fn reason_message(reason: ArchiveReason) -> &'static str {
    match reason {
        ArchiveReason::Rejected => "Offset rejected by client.",
        ArchiveReason::DeliveryLimit => "Offset delivery count exceeded the threshold.",
    }
}

/// The dead letter of `letter`: its headers, no key and no value.
fn dead_letter_record(origin: &Origin<'_>, letter: &DeadLetter, now_ms: i64) -> Record {
    let mut record = Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: -1,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: TimestampType::Creation,
        offset: 0,
        sequence: -1,
        // No earlier than the time it was archived: a look for it after a
        // restart starts there.
        timestamp: now_ms.max(letter.since_ms),
        key: None,
        value: None,
        headers: Default::default(),
    };
    for (name, value) in [
        (HEADER_TOPIC, origin.topic.to_string()),
        (HEADER_PARTITION, origin.partition.to_string()),
        (HEADER_OFFSET, letter.offset.to_string()),
        (HEADER_GROUP, origin.group.to_string()),
        (HEADER_DELIVERY_COUNT, letter.delivery_count.to_string()),
        (HEADER_MESSAGE, reason_message(letter.reason).to_string()),
    ] {
        record
            .headers
            .insert(text(name), Some(Bytes::from(value.into_bytes())));
    }
    record
}

/// A generous bound on the bytes `record` takes in a batch.
fn framed_len(record: &Record) -> usize {
    let headers: usize = record
        .headers
        .iter()
        .map(|(k, v)| k.len() + v.as_ref().map_or(0, Bytes::len) + 10)
        .sum();
    record.key.as_ref().map_or(0, Bytes::len)
        + record.value.as_ref().map_or(0, Bytes::len)
        + headers
        + 40
}

fn encode(records: &[Record]) -> Result<Bytes, String> {
    let numbered: Vec<Record> = (0..)
        .zip(records)
        .map(|(i, r)| Record {
            offset: i,
            ..r.clone()
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        numbered.iter(),
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .map_err(|e| format!("cannot encode dead letters: {e}"))?;
    Ok(buf.freeze())
}

/// Records read from a source partition, the last batch kept: dead letters
/// of one job are in offset order and often share a batch.
#[derive(Default)]
struct Copies {
    batch: Vec<Record>,
}

impl Copies {
    /// The record at `offset`, `None` when the partition no longer holds it.
    fn get(&mut self, partition: &Partition, offset: i64) -> Result<Option<Record>, String> {
        if let Some(r) = self.batch.iter().find(|r| r.offset == offset) {
            return Ok(Some(r.clone()));
        }
        let read = match partition.read(offset, READ_BYTES) {
            Ok(read) => read,
            Err(weir_storage::ReadError::OffsetOutOfRange { .. }) => return Ok(None),
            Err(e) => return Err(format!("reading the record to copy: {e}")),
        };
        self.batch.clear();
        for framed in batches(&read.records) {
            let Ok((header, batch)) = framed else { break };
            if header.is_control() || header.last_offset() < offset {
                continue;
            }
            let mut bytes = read.records.slice_ref(batch);
            let decoded = RecordBatchDecoder::decode(&mut bytes)
                .map_err(|e| format!("decoding the record to copy: {e}"))?;
            self.batch = decoded.records;
            break;
        }
        Ok(self.batch.iter().find(|r| r.offset == offset).cloned())
    }
}

/// The offset after the last batch of `records`, having added to `found`
/// each offset of `wanted` whose dead letter from `origin` they hold.
fn scan(
    records: &Bytes,
    origin: &Origin<'_>,
    wanted: &HashSet<i64>,
    found: &mut HashSet<i64>,
) -> Result<i64, String> {
    let (partition_text, group) = (origin.partition.to_string(), origin.group.as_bytes());
    let mut next = i64::MIN;
    for framed in batches(records) {
        let (header, batch) = framed.map_err(|e| e.to_string())?;
        next = next.max(header.last_offset().saturating_add(1));
        if header.is_control() {
            continue;
        }
        let mut bytes = records.slice_ref(batch);
        let Ok(decoded) = RecordBatchDecoder::decode(&mut bytes) else {
            // Not one of ours (a client's batch this build cannot decode).
            continue;
        };
        for r in decoded.records {
            let header = |name: &str| {
                r.headers
                    .iter()
                    .find(|(k, _)| k.as_str() == name)
                    .and_then(|(_, v)| v.as_deref())
            };
            let ours = header(HEADER_GROUP) == Some(group)
                && header(HEADER_TOPIC) == Some(origin.topic.as_bytes())
                && header(HEADER_PARTITION) == Some(partition_text.as_bytes());
            let offset = header(HEADER_OFFSET)
                .and_then(|v| std::str::from_utf8(v).ok())
                .and_then(|v| v.parse::<i64>().ok());
            if let Some(offset) = offset.filter(|o| ours && wanted.contains(o)) {
                found.insert(offset);
            }
        }
    }
    Ok(next)
}

/// The earliest time one of `letters` was archived, less a slack: where a
/// look for their dead letters starts.
fn look_since(letters: &[DeadLetter]) -> i64 {
    letters
        .iter()
        .map(|l| l.since_ms)
        .min()
        .unwrap_or(i64::MIN)
        .saturating_sub(LOOK_SLACK_MS)
}

/// [`written`] for a dead-letter partition another broker leads: read from
/// it as a consumer (ListOffsets by time, then Fetch up to its high
/// watermark) over the peer connections. Blocks on the network: called on
/// a blocking thread.
fn written_at(
    broker: &Broker,
    leader: i32,
    (topic, topic_id, index): (&str, uuid::Uuid, i32),
    origin: &Origin<'_>,
    letters: &[DeadLetter],
) -> Result<HashSet<i64>, String> {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
    use kafka_protocol::messages::{BrokerId, FetchRequest, ListOffsetsRequest, TopicName};
    let failed = |e: &dyn std::fmt::Display| {
        format!("looking for written dead letters on broker {leader}: {e}")
    };
    let handle = tokio::runtime::Handle::try_current().map_err(|e| failed(&e))?;
    let wanted: HashSet<i64> = letters.iter().map(|l| l.offset).collect();
    let mut found = HashSet::new();
    let request = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![
            ListOffsetsTopic::default()
                .with_name(TopicName(text(topic)))
                .with_partitions(vec![
                    ListOffsetsPartition::default()
                        .with_partition_index(index)
                        .with_timestamp(look_since(letters)),
                ]),
        ]);
    let answer = handle
        .block_on(broker.peers.call(leader, &request, LIST_OFFSETS_VERSION))
        .map_err(|e| failed(&e))?;
    let p = answer
        .topics
        .iter()
        .flat_map(|t| t.partitions.iter())
        .next()
        .ok_or_else(|| failed(&"no partition answered ListOffsets"))?;
    if p.error_code != 0 {
        return Err(failed(&format!("ListOffsets error {}", p.error_code)));
    }
    // -1: nothing was written since.
    let mut next = p.offset;
    while next >= 0 && found.len() < wanted.len() {
        let request = FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(0)
            .with_min_bytes(0)
            .with_max_bytes(READ_BYTES as i32)
            .with_session_id(0)
            .with_session_epoch(-1)
            .with_topics(vec![
                FetchTopic::default()
                    .with_topic_id(topic_id)
                    .with_partitions(vec![
                        FetchPartition::default()
                            .with_partition(index)
                            .with_fetch_offset(next)
                            .with_partition_max_bytes(READ_BYTES as i32),
                    ]),
            ]);
        let answer = handle
            .block_on(broker.peers.call(leader, &request, FETCH_VERSION))
            .map_err(|e| failed(&e))?;
        let p = answer
            .responses
            .iter()
            .flat_map(|t| t.partitions.iter())
            .next()
            .ok_or_else(|| failed(&"no partition answered Fetch"))?;
        if p.error_code != 0 {
            return Err(failed(&format!("Fetch error {}", p.error_code)));
        }
        let before = next;
        let records = p.records.clone().unwrap_or_default();
        next = next.max(scan(&records, origin, &wanted, &mut found).map_err(|e| failed(&e))?);
        if next <= before || next >= p.high_watermark {
            break;
        }
    }
    Ok(found)
}

/// Versions of the requests a look on another broker sends.
const LIST_OFFSETS_VERSION: i16 = 4;
const FETCH_VERSION: i16 = 13;

/// The offsets of `letters` whose dead letters `partition` already holds:
/// read from the earliest time one of them was archived (less a slack).
fn written(
    partition: &Partition,
    origin: &Origin<'_>,
    letters: &[DeadLetter],
) -> Result<HashSet<i64>, String> {
    let wanted: HashSet<i64> = letters.iter().map(|l| l.offset).collect();
    let since = look_since(letters);
    let mut found = HashSet::new();
    let failed = |e: &dyn std::fmt::Display| format!("looking for written dead letters: {e}");
    let Some((mut next, _)) = partition
        .offset_for_timestamp(since)
        .map_err(|e| failed(&e))?
    else {
        return Ok(found);
    };
    let end = partition.offsets().log_end;
    while next < end && found.len() < wanted.len() {
        let read = partition
            .read_replica(next, READ_BYTES)
            .map_err(|e| failed(&e))?;
        let before = next;
        let scanned = scan(&read.records, origin, &wanted, &mut found).map_err(|e| failed(&e))?;
        next = next.max(scanned);
        if next <= before {
            break;
        }
    }
    Ok(found)
}
