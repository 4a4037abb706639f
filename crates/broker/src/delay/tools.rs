//! The tools' view of delayed delivery: how many records of a topic are
//! pending and when the next is due ([`describe`]), which are pending
//! ([`list`]), and cancelling one before it is due ([`cancel`]).
//!
//! The mover owns the schedule, so each question is sent to it (a bounded
//! queue: a full one is answered "busy") and answered between its ticks.
//! Answers come from this replica's schedule, which every replica feeds
//! from its log alike; a cancel needs the partition's leader.
//!
//! **Cancelling.** The mover appends a cancel marker to the partition (a
//! record with only [`weir_storage::DELAY_CANCEL_HEADER`], hidden from
//! consumers) when the record is still pending: not delivered, its copy not
//! in the log, no other marker for it. It decides this on its own thread,
//! the one that appends copies, so a cancel and a delivery of one record
//! never both succeed. The marker is acknowledged once committed; the feed
//! then takes the record out of the schedule on every replica. A marker a
//! failover truncates was never acknowledged, and the record is delivered.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::mpsc::TrySendError;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{Semaphore, oneshot};
use uuid::Uuid;
use weir_storage::{
    AckWait, PartitionId, PendingView, RecordBatchHeader, TimerEntry, TimerError, TimerStore,
    cancel_batch,
};

use super::{FEED_BYTES_PER_TICK, Handed, Mover};
use crate::Broker;
use crate::replica::Leadership;
use crate::topics::TopicState;

/// Questions that may wait for the mover at once.
pub(super) const QUERIES_MAX: usize = 64;
/// Schedule records one question may read: a question costs the mover at
/// most this, however many records are pending.
const SCAN_READS_MAX: u64 = 200_000;
/// The most records one [`list`] shows.
pub const LIST_MAX: usize = 1_000;
/// The most bytes of keys, values and headers one [`list`] holds: records
/// past them are left out (however large the records and the bound asked).
pub const LIST_BYTES_MAX: usize = 4 << 20;
/// The most bytes of stored batches one [`list`] reads to show its records
/// (a record is read from its whole batch): records past them are left
/// out, as past [`LIST_BYTES_MAX`].
pub const LIST_READ_BYTES_MAX: usize = 16 << 20;
/// Lists reading their records at once, over every connection: the reads
/// share the cores with the mover, whose deliveries must stay on time.
static LIST_READERS: Semaphore = Semaphore::const_new(1);
/// Cancels whose records are not met yet that may wait at once; the rest
/// of the store's bound is left to the feed's own cancels.
const CANCELS_WAITING_MAX: usize = TimerStore::CANCELS_MAX / 2;
/// How long a question waits for the mover's answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a cancel waits for its marker to be committed (both within
/// the admin API's 10 s, so its answer is this module's).
const COMMIT_TIMEOUT: Duration = Duration::from_secs(8);

/// Why a question about delayed records was not answered.
#[derive(Debug, thiserror::Error)]
pub enum DelayQueryError {
    /// No topic has the name.
    #[error("no topic named {0}")]
    UnknownTopic(String),
    /// The topic is a view: its records, pending ones included, are its
    /// source's.
    #[error("{view} is a view of {of}: its delayed records are those of {of}")]
    View {
        /// The view.
        view: String,
        /// Its source topic.
        of: String,
    },
    /// The topic has no such partition.
    #[error("topic {topic} has no partition {partition}")]
    UnknownPartition {
        /// The topic.
        topic: String,
        /// The partition asked for.
        partition: i32,
    },
    /// A cancel went to a broker that does not lead the partition.
    #[error("this broker does not lead {topic}-{partition}{}", leader_hint(*.leader))]
    NotLeader {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// The leader's broker id, or -1 when none is known.
        leader: i32,
    },
    /// Nothing pending at that offset: no such record, or not a delayed one.
    #[error("{0}")]
    NotPending(String),
    /// The record was pending once and no longer is (delivered, being
    /// delivered, or cancelled).
    #[error("{0}")]
    NoLongerPending(String),
    /// The mover cannot answer now: stopped, busy, catching up, or slow.
    /// Retrying may help.
    #[error("{0}")]
    Unavailable(String),
}

fn leader_hint(leader: i32) -> String {
    match leader {
        id if id >= 0 => format!("; broker {id} does"),
        _ => "; it has no leader now".into(),
    }
}

/// A topic's pending delayed records, as this broker's schedule has them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicDelays {
    /// Per partition of the topic, in order.
    pub partitions: Vec<PartitionDelays>,
    /// When the earliest pending record is due (ms since the epoch); `None`
    /// when none is pending, or none was found within the read bound.
    pub next_due_ms: Option<i64>,
    /// `next_due_ms` is exact: the schedule was read far enough.
    pub exact: bool,
}

impl TopicDelays {
    /// Records pending in the partitions this broker holds.
    pub fn pending(&self) -> u64 {
        self.partitions.iter().filter_map(|p| p.pending).sum()
    }
}

/// One partition's pending count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionDelays {
    /// The partition.
    pub partition: i32,
    /// Records pending; `None` when this broker holds no replica of it.
    pub pending: Option<u64>,
}

/// The earliest pending records of a topic ([`list`]).
#[derive(Debug, Clone)]
pub struct PendingList {
    /// The topic's counts and next due time.
    pub delays: TopicDelays,
    /// The earliest pending records, by due time, then partition and offset.
    pub records: Vec<ListedRecord>,
    /// `records` are exactly the earliest: the schedule was read far enough.
    pub exact: bool,
    /// Fewer records than asked are shown: their bytes reached
    /// [`LIST_BYTES_MAX`], or the batches read for them
    /// [`LIST_READ_BYTES_MAX`].
    pub cut: bool,
}

/// One pending record.
#[derive(Debug, Clone)]
pub struct ListedRecord {
    /// Its partition.
    pub partition: i32,
    /// Its offset: the pending offset `cancel` takes.
    pub offset: i64,
    /// When it is due, as scheduled.
    pub due_ms: i64,
    /// The record, or why it cannot be read.
    pub record: Result<PendingView, String>,
}

/// A cancel's marker, committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cancelled {
    /// The marker's offset in the partition.
    pub marker_offset: i64,
}

/// Where the mover sends a question's answer.
type Reply<T> = oneshot::Sender<Result<T, DelayQueryError>>;

/// What the mover answers a list: the counts, the earliest entries, and
/// whether they are exactly the earliest.
type Listed = (TopicDelays, Vec<TimerEntry>, bool);

/// A question for the mover, with where its answer goes.
pub(crate) enum Query {
    Describe {
        topic_id: Uuid,
        partitions: i32,
        reply: Reply<TopicDelays>,
    },
    List {
        topic_id: Uuid,
        partitions: i32,
        partition: Option<i32>,
        limit: usize,
        reply: Reply<Listed>,
    },
    Cancel {
        topic: String,
        id: PartitionId,
        offset: i64,
        reply: Reply<(i64, AckWait)>,
    },
}

/// How many records of `topic` are pending, and when the next is due.
pub async fn describe(broker: &Arc<Broker>, topic: &str) -> Result<TopicDelays, DelayQueryError> {
    let state = data_topic(broker, topic)?;
    ask(broker, |reply| Query::Describe {
        topic_id: state.meta.id,
        partitions: state.meta.partitions,
        reply,
    })
    .await
}

/// The earliest `limit` (at most [`LIST_MAX`]) pending records of `topic`,
/// or of one of its partitions, each with its key, value and header values
/// cut to `bytes_max` bytes.
pub async fn list(
    broker: &Arc<Broker>,
    topic: &str,
    partition: Option<i32>,
    limit: usize,
    bytes_max: usize,
) -> Result<PendingList, DelayQueryError> {
    let state = data_topic(broker, topic)?;
    if let Some(p) = partition {
        check_partition(&state, p)?;
    }
    let (delays, entries, exact) = ask(broker, |reply| Query::List {
        topic_id: state.meta.id,
        partitions: state.meta.partitions,
        partition,
        limit: limit.min(LIST_MAX),
        reply,
    })
    .await?;
    // The records are read off the mover's thread, by one list at a time.
    let reading = LIST_READERS.acquire().await.map_err(|e| {
        DelayQueryError::Unavailable(format!("reading pending records failed: {e}"))
    })?;
    let (records, cut) = tokio::task::spawn_blocking(move || {
        let _reading = reading;
        let mut records = Vec::with_capacity(entries.len());
        let mut shown = 0usize;
        let mut batch = BatchInHand::default();
        for e in entries {
            if shown >= LIST_BYTES_MAX || batch.read >= LIST_READ_BYTES_MAX {
                return (records, true);
            }
            let record = read_pending(&state, (e.partition, e.offset), bytes_max, &mut batch);
            shown += record.as_ref().map_or(0, PendingView::bytes);
            records.push(ListedRecord {
                partition: e.partition,
                offset: e.offset,
                due_ms: e.due_ms,
                record,
            });
        }
        (records, false)
    })
    .await
    .map_err(|e| DelayQueryError::Unavailable(format!("reading pending records failed: {e}")))?;
    Ok(PendingList {
        delays,
        records,
        exact,
        cut,
    })
}

/// Cancel the pending record at `offset` of `topic`-`partition`: it is
/// never delivered. Answers once the cancel is committed.
pub async fn cancel(
    broker: &Arc<Broker>,
    topic: &str,
    partition: i32,
    offset: i64,
) -> Result<Cancelled, DelayQueryError> {
    let state = data_topic(broker, topic)?;
    check_partition(&state, partition)?;
    let id = PartitionId {
        topic_id: state.meta.id,
        partition,
    };
    let (marker_offset, wait) = ask(broker, |reply| Query::Cancel {
        topic: topic.to_owned(),
        id,
        offset,
        reply,
    })
    .await?;
    match tokio::time::timeout(COMMIT_TIMEOUT, wait.wait()).await {
        Ok(Ok(())) => Ok(Cancelled { marker_offset }),
        Ok(Err(e)) => Err(DelayQueryError::Unavailable(format!(
            "the cancel marker at offset {marker_offset} of {topic}-{partition} failed: {e}; \
             the record may still be delivered"
        ))),
        Err(_) => Err(DelayQueryError::Unavailable(format!(
            "the cancel marker at offset {marker_offset} of {topic}-{partition} was not \
             committed within {COMMIT_TIMEOUT:?} (are its replicas in sync?); the record may \
             still be delivered"
        ))),
    }
}

/// The topic named, which must hold data (not be a view).
fn data_topic(broker: &Broker, topic: &str) -> Result<Arc<TopicState>, DelayQueryError> {
    let state = broker
        .topic(topic)
        .ok_or_else(|| DelayQueryError::UnknownTopic(topic.to_owned()))?;
    if let Some(view) = &state.view {
        return Err(DelayQueryError::View {
            view: topic.to_owned(),
            of: view.source.clone(),
        });
    }
    Ok(state)
}

fn check_partition(state: &TopicState, partition: i32) -> Result<(), DelayQueryError> {
    if (0..state.meta.partitions).contains(&partition) {
        return Ok(());
    }
    Err(DelayQueryError::UnknownPartition {
        topic: state.meta.name.clone(),
        partition,
    })
}

/// Send a question built around its reply channel, and wait for the answer.
async fn ask<T>(
    broker: &Broker,
    query: impl FnOnce(Reply<T>) -> Query,
) -> Result<T, DelayQueryError> {
    let stopped = || {
        DelayQueryError::Unavailable(
            "delayed delivery is not running on this broker (see its log)".into(),
        )
    };
    let queries = broker.delays.queries().ok_or_else(stopped)?;
    let (tx, rx) = oneshot::channel();
    match queries.try_send(query(tx)) {
        Ok(()) => {}
        Err(TrySendError::Full(_)) => {
            return Err(DelayQueryError::Unavailable(format!(
                "{QUERIES_MAX} questions about delayed records are waiting already; retry"
            )));
        }
        Err(TrySendError::Disconnected(_)) => return Err(stopped()),
    }
    match tokio::time::timeout(ANSWER_TIMEOUT, rx).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(_)) => Err(stopped()),
        Err(_) => Err(DelayQueryError::Unavailable(format!(
            "delayed delivery did not answer within {ANSWER_TIMEOUT:?}; a cancel may still take \
             effect (`weir delayed list` shows whether the record is pending)"
        ))),
    }
}

/// The stored batch a list read last, kept for the records after it that
/// it holds too (records due one after the other were often produced
/// together), and the bytes of batches the list has read.
#[derive(Default)]
struct BatchInHand {
    /// Partition, first and last offset, and the batch.
    batch: Option<(i32, i64, i64, Bytes)>,
    read: usize,
}

/// The pending record at `offset` of `partition`, read from this broker's
/// replica, or from `hand` when it holds the record's batch.
fn read_pending(
    state: &TopicState,
    (partition, offset): (i32, i64),
    bytes_max: usize,
    hand: &mut BatchInHand,
) -> Result<PendingView, String> {
    let held = |(p, first, last, _): &(i32, i64, i64, Bytes)| {
        *p == partition && (*first..=*last).contains(&offset)
    };
    if !hand.batch.as_ref().is_some_and(held) {
        let local = state
            .local(partition)
            .ok_or_else(|| "this broker holds no replica of its partition".to_owned())?;
        let (first, batch) = local
            .delay_batches(offset, offset + 1, 1)
            .map_err(|e| e.to_string())?
            .batches
            .into_iter()
            .next()
            .ok_or_else(|| "it is no longer in its partition".to_owned())?;
        hand.read += batch.len();
        let last = RecordBatchHeader::parse(&batch).map_or(first, |h| h.last_offset());
        hand.batch = Some((partition, first, last, batch));
    }
    let (_, _, _, batch) = hand
        .batch
        .as_ref()
        .ok_or_else(|| "it is no longer in its partition".to_owned())?;
    weir_storage::pending_record(batch, offset, bytes_max).map_err(|e| e.to_string())
}

impl Mover {
    /// Answer one question; a reply nobody waits for any more is dropped.
    /// A failed write to the schedule (while feeding it first) is the
    /// mover's own error, as in a tick.
    pub(super) fn answer(&mut self, query: Query) -> Result<(), TimerError> {
        match query {
            Query::Describe {
                topic_id,
                partitions,
                reply,
            } => {
                self.catch_up(topic_id, partitions)?;
                let _ = reply.send(self.describe(topic_id, partitions));
            }
            Query::List {
                topic_id,
                partitions,
                partition,
                limit,
                reply,
            } => {
                self.catch_up(topic_id, partitions)?;
                let answer = self.describe(topic_id, partitions).and_then(|delays| {
                    let (entries, exact) = self.earliest(topic_id, partition, limit)?;
                    Ok((delays, entries, exact))
                });
                let _ = reply.send(answer);
            }
            Query::Cancel {
                topic,
                id,
                offset,
                reply,
            } => {
                let _ = reply.send(self.cancel(&topic, id, offset));
            }
        }
        Ok(())
    }

    /// Feed the topic's partitions held here, so that an answer reflects
    /// what was committed when it was asked (a tick may not have yet).
    fn catch_up(&mut self, topic_id: Uuid, partitions: i32) -> Result<(), TimerError> {
        let mut budget = FEED_BYTES_PER_TICK;
        for partition in 0..partitions {
            let id = PartitionId {
                topic_id,
                partition,
            };
            if let Some(partition) = self.broker.log().partition(id) {
                self.feed(&partition, &mut budget)?;
            }
        }
        Ok(())
    }

    fn describe(&self, topic_id: Uuid, partitions: i32) -> Result<TopicDelays, DelayQueryError> {
        let hosted = |partition| {
            self.broker
                .log()
                .partition(PartitionId {
                    topic_id,
                    partition,
                })
                .is_some()
        };
        let partitions = (0..partitions)
            .map(|partition| PartitionDelays {
                partition,
                pending: hosted(partition).then(|| self.pending_in(topic_id, partition)),
            })
            .collect();
        let (next, exact) = self.earliest(topic_id, None, 1)?;
        Ok(TopicDelays {
            partitions,
            next_due_ms: next.first().map(|e| e.due_ms),
            exact,
        })
    }

    /// Records of one partition pending: in the schedule and not met as
    /// cancelled, or handed out and not seen delivered.
    fn pending_in(&self, topic_id: Uuid, partition: i32) -> u64 {
        let id = PartitionId {
            topic_id,
            partition,
        };
        let stored = self.store.pending_in_partition(topic_id, partition);
        let cancelled = self.store.cancels_in_partition(topic_id, partition) as u64;
        let handed = self
            .handed
            .get(&id)
            .map_or(0, |h| h.values().filter(|h| !h.in_store).count()) as u64;
        stored.saturating_sub(cancelled) + handed
    }

    /// The earliest `limit` pending entries of a topic (or one partition):
    /// the handed records first (they are due), then the schedule's.
    fn earliest(
        &self,
        topic_id: Uuid,
        partition: Option<i32>,
        limit: usize,
    ) -> Result<(Vec<TimerEntry>, bool), DelayQueryError> {
        if limit == 0 {
            return Ok((Vec::new(), true));
        }
        let wanted = |t: Uuid, p: i32| t == topic_id && partition.is_none_or(|want| want == p);
        let found = self
            .store
            .earliest(|e| wanted(e.topic_id, e.partition), limit, SCAN_READS_MAX)
            .map_err(|e| {
                DelayQueryError::Unavailable(format!("the delay schedule cannot be read: {e}"))
            })?;
        let mut entries: BTreeMap<(i64, i32, i64), TimerEntry> = found
            .entries
            .into_iter()
            .map(|e| ((e.due_ms, e.partition, e.offset), e))
            .collect();
        for (id, handed) in &self.handed {
            if !wanted(id.topic_id, id.partition) {
                continue;
            }
            for h in handed.values().filter(|h| !h.in_store) {
                let e = h.entry;
                entries.insert((e.due_ms, e.partition, e.offset), e);
            }
        }
        Ok((entries.into_values().take(limit).collect(), found.complete))
    }

    /// Append a cancel marker for the record at `offset` if it is still
    /// pending; the marker's offset and the wait for its commit.
    fn cancel(
        &mut self,
        topic: &str,
        id: PartitionId,
        offset: i64,
    ) -> Result<(i64, AckWait), DelayQueryError> {
        let at = format!("{topic}-{}", id.partition);
        let not_leader = |leader| DelayQueryError::NotLeader {
            topic: topic.to_owned(),
            partition: id.partition,
            leader,
        };
        let partition = self
            .broker
            .log()
            .partition(id)
            .ok_or_else(|| not_leader(-1))?;
        if let Leadership::NotLeader { leader, .. } = self.broker.replicas.leadership(id) {
            return Err(not_leader(leader));
        }
        let mut budget = FEED_BYTES_PER_TICK;
        let caught_up = self.feed(&partition, &mut budget).map_err(|e| {
            DelayQueryError::Unavailable(format!("the delay schedule cannot be written: {e}"))
        })?;
        if !caught_up {
            return Err(DelayQueryError::Unavailable(format!(
                "the delay schedule of {at} is still catching up with its log; retry"
            )));
        }
        let offsets = partition.offsets();
        if !(offsets.log_start..offsets.high_watermark).contains(&offset) {
            return Err(DelayQueryError::NotPending(format!(
                "{at} has no committed record at offset {offset} (its records run from {} to {})",
                offsets.log_start, offsets.high_watermark
            )));
        }
        let no_longer = |how: &str| {
            DelayQueryError::NoLongerPending(format!(
                "the delayed record at offset {offset} of {at} is no longer pending: {how}"
            ))
        };
        if self
            .cancelling
            .get(&id)
            .is_some_and(|c| c.contains_key(&offset))
        {
            return Err(no_longer("a cancel of it is being committed"));
        }
        let not_delayed = || {
            DelayQueryError::NotPending(format!(
                "the record at offset {offset} of {at} is not a delayed record"
            ))
        };
        let read = |e: weir_storage::ReadError| {
            DelayQueryError::Unavailable(format!("{at} cannot be read: {e}"))
        };
        let (_, batch) = partition
            .delay_batches(offset, offset + 1, 1)
            .map_err(read)?
            .batches
            .into_iter()
            .next()
            .ok_or_else(not_delayed)?;
        let original =
            weir_storage::pending_record(&batch, offset, 0).map_err(|_| not_delayed())?;
        let fed = self.fed.get(&id).copied().unwrap_or_default();
        if super::unfed_markers(&partition, fed)
            .map_err(read)?
            .contains(&offset)
        {
            return Err(no_longer(
                "a copy of it or a cancel of it is already in the log",
            ));
        }
        match self.handed.get(&id).and_then(|h| h.get(&offset)) {
            Some(Handed {
                in_flight: Some(copy),
                ..
            }) => {
                return Err(no_longer(&format!(
                    "it is being delivered (its copy is at offset {copy})"
                )));
            }
            Some(_) => {}
            None => {
                let scheduled = self
                    .store
                    .contains(id.topic_id, id.partition, offset, original.due_ms)
                    .map_err(|e| {
                        DelayQueryError::Unavailable(format!(
                            "the delay schedule cannot be read: {e}"
                        ))
                    })?;
                if !scheduled {
                    return Err(no_longer("it was delivered or cancelled"));
                }
            }
        }
        let waiting = self.store.cancels_outstanding()
            + self.cancelling.values().map(|c| c.len()).sum::<usize>();
        if waiting >= CANCELS_WAITING_MAX {
            return Err(DelayQueryError::Unavailable(format!(
                "{waiting} cancels wait for their records to come due; retry later"
            )));
        }
        let now = self.broker.clock.now_ms();
        let marker = cancel_batch(&[offset], now)
            .map_err(|e| DelayQueryError::Unavailable(format!("cannot build a cancel: {e}")))?;
        let appended = partition.append(Bytes::from(marker)).map_err(|e| {
            DelayQueryError::Unavailable(format!("the cancel cannot be appended to {at}: {e}"))
        })?;
        self.cancelling
            .entry(id)
            .or_default()
            .insert(offset, appended.base_offset);
        tracing::info!(partition = ?id, offset, marker = appended.base_offset,
            "a delayed record was cancelled");
        Ok((appended.base_offset, appended.ack_wait(true)))
    }
}
