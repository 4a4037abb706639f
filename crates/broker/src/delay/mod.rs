//! Delayed delivery (RocketMQ's delayed messages, for Kafka clients): the
//! mover that hands each pending record to its partition when it is due.
//!
//! A producer asks for a delay with a record header (`weir.delay-ms` or
//! `weir.deliver-at-ms`, checked by Produce). The record is stored in its
//! own partition like any other, so it is acknowledged, replicated and
//! deduplicated as usual, but the storage hides it from consumers (the
//! queue index marks its batch). When it is due, the mover on the
//! partition's leader appends a copy of it to the same partition: its key,
//! value and headers, plus `weir.delayed-from-offset` (the pending record's
//! offset) and `weir.produce-time-ms`. Consumers read the copy.
//!
//! **The schedule** is a [`TimerStore`] in `<data>/timer/`, fed from the
//! log by every replica alike: each committed pending record (below the
//! high watermark) is added, each committed copy or cancel marker takes
//! its pending record out. The log is the truth and the store an index of it: its checkpoint
//! keeps, per partition, the offset the feed reached, and a restart feeds
//! on from there.
//!
//! **Exactly once.** The store hands a pending record out once it is due;
//! it then waits in `handed` until a committed copy of it is fed. A leader
//! delivers a handed record only once its feed has reached the high
//! watermark, and only when no copy or cancel marker of it lies in the log
//! past the feed (uncommitted, its own or an earlier leader's) or is in
//! flight. A
//! copy that a failover truncates was never committed, so the record stays
//! handed and the next leader delivers it. Before each checkpoint the
//! handed records are added to the store again, so after a crash they are
//! handed out again and the feed takes out the ones already delivered.
//!
//! **Order.** Each delivery appends a partition's due records in order of
//! due time, then pending offset.
//!
//! **Memory** is the store's (its wheel and one slot in hand), one feed
//! position per partition, and the handed records: those due whose copies
//! are not committed yet. A delivery reads whole original batches (a copy
//! needs its record's bytes, compressed with the others): it holds at most
//! [`DELIVER_READ_BYTES_MAX`] of them, in a buffer it keeps between
//! deliveries (up to [`READ_BUF_KEPT_BYTES`]), decompresses one at a time,
//! and holds the copies it builds from them until they are appended.
//!
//! **Tools** (`tools`): describing, listing and cancelling pending records
//! are questions to the mover, which owns the store; it answers them
//! between ticks. A cancel is a marker record the mover appends
//! ([`weir_storage::cancel_batch`]), so it is decided in the same order as
//! deliveries and replicates like them.

mod tools;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Range;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use uuid::Uuid;
use weir_storage::{
    CopyRecord, Partition, PartitionId, TimerConfig, TimerEntry, TimerError, TimerStore,
    copies_batch, copy_records, scan_delays,
};

use crate::Broker;
use crate::replica::Leadership;
pub use tools::{
    Cancelled, DelayQueryError, LIST_MAX, ListedRecord, PartitionDelays, PendingList, TopicDelays,
    cancel, describe, list,
};
use tools::{QUERIES_MAX, Query};

/// The timer store's folder under the data folder.
pub const TIMER_DIR: &str = "timer";
/// How often the mover feeds, polls and delivers.
const TICK: Duration = Duration::from_millis(20);
/// How often the schedule is made durable.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);
/// Bytes of marked batches one partition's feed reads per step.
const FEED_READ_BYTES: usize = 1 << 20;
/// Bytes of marked batches the feed reads per tick, over all partitions,
/// so one tick stays short however far behind the feed is.
const FEED_BYTES_PER_TICK: usize = 16 << 20;
/// What one step of a feed's index walk counts against the tick's budget
/// besides the batches it reads: a walk of a long unmarked range (a first
/// start over old data) is spread over ticks too.
const FEED_STEP_COST: usize = 256 << 10;
/// Due records taken from the store per tick.
const POLL_MAX: usize = 10_000;
/// Records one delivery copies to one partition.
const DELIVER_MAX: usize = 500;
/// Bytes of original batches one delivery reads and holds: a record is
/// copied from its whole batch, so due records from large batches are
/// delivered a bounded number of batches at a time.
const DELIVER_READ_BYTES_MAX: usize = 16 << 20;
/// Bytes of the mover's read buffer kept between deliveries: what one
/// delivery holds (its bound and the batch that crosses it, when batches
/// are at most 8 MiB), so a busy mover's pages are not faulted in and
/// handed back every tick. Profiled at a million pending, faulting in a
/// fresh buffer per delivery took more of the mover's time than anything
/// else.
const READ_BUF_KEPT_BYTES: usize = DELIVER_READ_BYTES_MAX + (8 << 20);

/// What the broker's request handlers see of the mover.
#[derive(Debug, Default)]
pub(crate) struct DelayState {
    /// The mover runs and its schedule is writable: Produce refuses new
    /// delayed records otherwise, rather than store records nobody moves.
    running: AtomicBool,
    /// Where the tools' questions go while the mover runs (bounded:
    /// [`QUERIES_MAX`] wait at most).
    queries: Mutex<Option<SyncSender<Query>>>,
}

impl DelayState {
    /// Whether delayed records are being moved.
    pub(crate) fn running(&self) -> bool {
        self.running.load(Ordering::SeqCst)
    }

    fn set_queries(&self, queries: Option<SyncSender<Query>>) {
        match self.queries.lock() {
            Ok(mut slot) => *slot = queries,
            Err(poisoned) => *poisoned.into_inner() = queries,
        }
    }

    /// The way to the mover's questions, while it runs.
    fn queries(&self) -> Option<SyncSender<Query>> {
        match self.queries.lock() {
            Ok(slot) => slot.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

/// The running mover: a thread that owns the timer store. Dropping it
/// stops the thread after a last checkpoint.
pub struct DelayMover {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl DelayMover {
    /// Open the schedule in `<data>/timer` and start moving for `broker`.
    /// Refused when the store cannot be opened (an unknown format version,
    /// damage inside what its checkpoint vouches for): the broker must not
    /// start without its schedule.
    pub fn start(broker: Arc<Broker>, data_dir: &Path) -> Result<Self, TimerError> {
        let dir = data_dir.join(TIMER_DIR);
        let now = broker.clock.now_ms();
        let (store, progress) = TimerStore::open(&dir, TimerConfig::default(), now)?;
        let fed = progress
            .iter()
            .map(|&(topic_id, partition, offset)| {
                (
                    PartitionId {
                        topic_id,
                        partition,
                    },
                    offset,
                )
            })
            .collect();
        let stop = Arc::new(AtomicBool::new(false));
        let state = broker.delays.clone();
        let (queries_tx, queries) = std::sync::mpsc::sync_channel(QUERIES_MAX);
        let mut mover = Mover {
            broker,
            store,
            fed,
            caught_up: HashSet::new(),
            handed: HashMap::new(),
            cancelling: HashMap::new(),
            read_buf: Vec::new(),
            queries,
            last_checkpoint: Instant::now(),
            state: state.clone(),
        };
        let stopping = stop.clone();
        state.running.store(true, Ordering::SeqCst);
        state.set_queries(Some(queries_tx));
        let thread = std::thread::Builder::new()
            .name("weir-delays".into())
            .spawn(move || mover.run(&stopping))
            .map_err(|e| {
                state.running.store(false, Ordering::SeqCst);
                state.set_queries(None);
                TimerError::Io {
                    context: format!(
                        "starting the delayed-delivery thread over {}",
                        dir.display()
                    ),
                    source: e,
                }
            })?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }

    /// Stop the mover after a last checkpoint.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the delayed-delivery mover panicked");
        }
    }
}

impl Drop for DelayMover {
    fn drop(&mut self) {
        self.halt();
    }
}

/// A due record waiting for its committed copy.
#[derive(Debug, Clone, Copy)]
struct Handed {
    entry: TimerEntry,
    /// The offset of a copy this leader appended and has not seen committed.
    in_flight: Option<i64>,
    /// Added to the store again for a checkpoint, and not handed out since:
    /// the store must be told when its copy is seen, or it would hand the
    /// record out again.
    in_store: bool,
    /// Its copy is over max.message.bytes (logged once).
    oversize: bool,
}

struct Mover {
    broker: Arc<Broker>,
    store: TimerStore,
    /// Per partition, the offset the feed reached: every pending record and
    /// copy below it is in the store (or out of it).
    fed: HashMap<PartitionId, i64>,
    /// Partitions whose feed reached the high watermark once since the
    /// start: from then on their `last_delay_mark` says when to walk again.
    caught_up: HashSet<PartitionId>,
    /// Due records not yet seen delivered, by partition and pending offset.
    handed: HashMap<PartitionId, BTreeMap<i64, Handed>>,
    /// Records this leader appended a cancel marker for and has not seen
    /// committed: pending offset to marker offset. Never delivered.
    cancelling: HashMap<PartitionId, HashMap<i64, i64>>,
    /// The tools' questions, answered between ticks.
    queries: Receiver<Query>,
    last_checkpoint: Instant,
    state: Arc<DelayState>,
    /// The original batches one delivery reads (at most
    /// [`DELIVER_READ_BYTES_MAX`] plus a batch), kept between deliveries.
    read_buf: Vec<u8>,
}

impl Mover {
    fn run(&mut self, stop: &AtomicBool) {
        tracing::info!(
            pending = self.store.pending(),
            partitions = self.fed.len(),
            "delayed delivery started"
        );
        while !stop.load(Ordering::SeqCst) {
            // Ticks start TICK apart (or back to back when one takes
            // longer), and the tools' questions are answered in between.
            let started = Instant::now();
            let ticked = self.tick();
            if let Err(e) = ticked.and_then(|()| self.answer_until(started + TICK)) {
                // The store refuses every change after a failed write or a
                // broken invariant: stop, and have Produce refuse delays.
                self.state.running.store(false, Ordering::SeqCst);
                self.state.set_queries(None);
                tracing::error!(error = %e,
                    "delayed delivery stopped: pending records stay hidden in their partitions, \
                     and new delayed records are refused, until the broker is restarted with a \
                     working timer store (check the disk holding <data>/timer)");
                return;
            }
        }
        self.state.running.store(false, Ordering::SeqCst);
        self.state.set_queries(None);
        if let Err(e) = self.checkpoint() {
            tracing::error!(error = %e, "the last checkpoint of the delayed-delivery schedule failed");
        }
    }

    fn tick(&mut self) -> Result<(), TimerError> {
        let partitions = self.broker.log().partitions();
        let hosted: HashSet<PartitionId> = partitions.iter().copied().collect();
        self.forget_gone(&hosted);
        let mut budget = FEED_BYTES_PER_TICK;
        let mut ready = Vec::new();
        for id in &partitions {
            let Some(partition) = self.broker.log().partition(*id) else {
                continue;
            };
            if self.feed(&partition, &mut budget)? {
                ready.push(partition);
            }
        }
        let now = self.broker.clock.now_ms();
        for entry in self.store.poll(now, POLL_MAX)? {
            let id = PartitionId {
                topic_id: entry.topic_id,
                partition: entry.partition,
            };
            if !hosted.contains(&id) {
                // Its topic was deleted, or its replica moved away.
                continue;
            }
            self.handed
                .entry(id)
                .or_default()
                .entry(entry.offset)
                .and_modify(|h| h.in_store = false)
                .or_insert(Handed {
                    entry,
                    in_flight: None,
                    in_store: false,
                    oversize: false,
                });
        }
        for partition in ready {
            self.deliver(&partition, now);
        }
        if weir_metrics::enabled() {
            let due = self.handed.values().map(BTreeMap::len).sum();
            weir_metrics::metrics().delayed_counts(self.store.pending(), due);
        }
        if self.last_checkpoint.elapsed() >= CHECKPOINT_EVERY {
            self.checkpoint()?;
        }
        Ok(())
    }

    /// Feed `partition`'s committed pending records and copies to the
    /// store, within the tick's `budget`. True when the feed reached the
    /// high watermark (this replica may then deliver).
    fn feed(&mut self, partition: &Partition, budget: &mut usize) -> Result<bool, TimerError> {
        let id = partition.id();
        let offsets = partition.offsets();
        let mut fed = self
            .fed
            .get(&id)
            .copied()
            .unwrap_or(offsets.log_start)
            .clamp(
                offsets.log_start,
                offsets.high_watermark.max(offsets.log_start),
            );
        if self.caught_up.contains(&id) && partition.last_delay_mark() < fed {
            // Nothing marked was appended past the feed since it caught up.
            self.fed.insert(id, offsets.high_watermark.max(fed));
            return Ok(true);
        }
        while fed < offsets.high_watermark && *budget > 0 {
            let found = match partition.delay_batches(fed, offsets.high_watermark, FEED_READ_BYTES)
            {
                Ok(found) => found,
                Err(e) => {
                    tracing::warn!(partition = ?id, error = %e, "delayed delivery cannot read a partition");
                    return Ok(false);
                }
            };
            *budget = budget.saturating_sub(FEED_STEP_COST);
            for (base, batch) in &found.batches {
                *budget = budget.saturating_sub(batch.len());
                self.feed_batch(id, *base, batch)?;
            }
            if found.next <= fed {
                break;
            }
            fed = found.next;
        }
        self.fed.insert(id, fed);
        let done = fed >= offsets.high_watermark;
        if done {
            self.caught_up.insert(id);
        }
        Ok(done)
    }

    /// Add the pending records of one committed batch; take out those its
    /// copies deliver.
    fn feed_batch(&mut self, id: PartitionId, base: i64, batch: &[u8]) -> Result<(), TimerError> {
        let scan = match scan_delays(batch) {
            Ok(scan) => scan,
            Err(e) => {
                tracing::warn!(partition = ?id, offset = base, error = %e,
                    "a batch marked as holding delayed records cannot be read; skipped");
                return Ok(());
            }
        };
        // The store takes delays up to its own bound (decades): a topic
        // whose weir.delay.max.ms allows more is delivered at that bound.
        let latest = self
            .broker
            .clock
            .now_ms()
            .saturating_add(TimerStore::DELAY_MS_MAX / 2);
        for record in scan.pending {
            self.store.add(TimerEntry {
                due_ms: record.due_ms.min(latest),
                topic_id: id.topic_id,
                partition: id.partition,
                offset: base + i64::from(record.offset_delta),
            })?;
        }
        // A committed copy delivers its original, a committed marker
        // cancels it: either way it leaves the schedule.
        let done = scan.copies.iter().map(|c| c.delayed_from);
        for from in done.chain(scan.cancels.iter().map(|c| c.cancelled)) {
            if let Some(cancelling) = self.cancelling.get_mut(&id) {
                cancelling.remove(&from);
            }
            let handed = self.handed.get_mut(&id).and_then(|h| h.remove(&from));
            if handed.is_none_or(|h| h.in_store) {
                self.store.cancel(id.topic_id, id.partition, from)?;
            }
        }
        Ok(())
    }

    /// On the leader, append copies of `partition`'s handed records, in
    /// due order, skipping any with a copy already in the log past the feed.
    fn deliver(&mut self, partition: &Partition, now: i64) {
        let id = partition.id();
        let Some(handed) = self.handed.get_mut(&id) else {
            return;
        };
        if !matches!(
            self.broker.replicas.leadership(id),
            Leadership::Leader { .. }
        ) {
            // Copies and markers this replica appended as leader may be
            // truncated: the feed takes out those that were committed.
            for h in handed.values_mut() {
                h.in_flight = None;
            }
            self.cancelling.remove(&id);
            return;
        }
        let mut due: Vec<Handed> = handed
            .values()
            .filter(|h| h.in_flight.is_none())
            .copied()
            .collect();
        if due.is_empty() {
            return;
        }
        // From the feed's end, not the high watermark: what was committed
        // since the feed is not in the store's view yet.
        let fed = self.fed.get(&id).copied().unwrap_or_default();
        let uncommitted = match unfed_markers(partition, fed) {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(partition = ?id, error = %e, "delayed delivery cannot read a partition");
                return;
            }
        };
        let cancelling = self.cancelling.get(&id);
        due.retain(|h| {
            !uncommitted.contains(&h.entry.offset)
                && cancelling.is_none_or(|c| !c.contains_key(&h.entry.offset))
        });
        due.sort_by_key(|h| (h.entry.due_ms, h.entry.offset));
        due.truncate(DELIVER_MAX);
        // Records due together may share a batch: each batch is read
        // once, by its first and last offset, into the buffer the mover
        // keeps. What is held is bounded: the records past the bound wait
        // for the next tick.
        let buf = &mut self.read_buf;
        buf.clear();
        let mut read: BTreeMap<i64, (i64, Range<usize>)> = BTreeMap::new();
        let mut originals: Vec<(Range<usize>, i64)> = Vec::with_capacity(due.len());
        for h in &due {
            let offset = h.entry.offset;
            let cached = read
                .range(..=offset)
                .next_back()
                .filter(|(_, (last, _))| offset <= *last)
                .map(|(_, (_, span))| span.clone());
            if cached.is_none() && buf.len() >= DELIVER_READ_BYTES_MAX {
                break;
            }
            let span = match cached {
                Some(span) => Some(span),
                None => match partition.delay_batches_into((offset, offset + 1), 1, buf) {
                    Ok(found) => found.spans.into_iter().next().and_then(|(base, span)| {
                        let header =
                            weir_storage::RecordBatchHeader::parse(buf.get(span.clone())?)?;
                        let last = base + i64::from(header.last_offset_delta);
                        read.insert(base, (last, span.clone()));
                        Some(span)
                    }),
                    Err(e) => {
                        // The disk failed to read it: it stays handed, and
                        // this and the later ones wait for the next tick.
                        tracing::warn!(partition = ?id, offset, error = %e,
                            "delayed delivery cannot read a due record's batch; it waits");
                        break;
                    }
                },
            };
            match span {
                Some(span) => originals.push((span, offset)),
                None => {
                    // Deleted by retention or DeleteRecords before it was due.
                    tracing::warn!(partition = ?id, offset,
                        "a delayed record is gone from its partition before it was due; dropped");
                    handed.remove(&offset);
                }
            }
        }
        let sources: Option<Vec<(&[u8], i64)>> = originals
            .iter()
            .map(|(span, offset)| Some((buf.get(span.clone())?, *offset)))
            .collect();
        let Some(sources) = sources else {
            // Every span was cut from this buffer since it was cleared.
            tracing::error!(partition = ?id,
                "delayed delivery lost track of the batches it read (a bug); the due records wait");
            return;
        };
        let mut copies = Vec::with_capacity(sources.len());
        for (copy, &(_, offset)) in copy_records(&sources).into_iter().zip(&sources) {
            match copy {
                Ok(copy) => copies.push(copy),
                Err(e) => {
                    // Not a pending record (the log was truncated under
                    // it, or it is damaged): the others are delivered.
                    tracing::warn!(partition = ?id, offset, error = %e,
                        "a scheduled delayed record cannot be delivered; dropped");
                    handed.remove(&offset);
                }
            }
        }
        drop(sources);
        // The buffer keeps its pages for the next delivery, unless this one
        // held more than most do.
        if buf.capacity() > READ_BUF_KEPT_BYTES {
            buf.clear();
            buf.shrink_to(READ_BUF_KEPT_BYTES);
        }
        // Appended in batches the partition takes (max.message.bytes).
        let limit = (partition.config().max_message_bytes as usize)
            .saturating_sub(weir_storage::RecordBatchHeader::BYTES);
        let mut rest: &[CopyRecord] = &copies;
        while !rest.is_empty() {
            let mut bytes = 0;
            let n = rest
                .iter()
                .take_while(|c| {
                    bytes += c.framed_bytes_max();
                    bytes <= limit
                })
                .count();
            if n == 0 {
                // One record whose copy, with its two headers, is over the
                // partition's max.message.bytes: it waits until the config
                // is raised.
                let offset = rest[0].original();
                if let Some(h) = handed.get_mut(&offset)
                    && !h.oversize
                {
                    h.oversize = true;
                    tracing::error!(partition = ?id, offset, limit,
                        "a due delayed record's copy is larger than max.message.bytes; it \
                         waits until the topic's max.message.bytes is raised");
                }
                rest = &rest[1..];
                continue;
            }
            let (batch, later) = rest.split_at(n);
            let built = match copies_batch(batch, now) {
                Ok(built) => built,
                Err(e) => {
                    tracing::error!(partition = ?id, error = %e,
                        "delayed records cannot be copied for delivery; they wait");
                    return;
                }
            };
            match partition.append(Bytes::from(built)) {
                Ok(outcome) => {
                    let mut lateness = Vec::with_capacity(batch.len());
                    for (i, copy) in batch.iter().enumerate() {
                        if let Some(h) = handed.get_mut(&copy.original()) {
                            h.in_flight = Some(outcome.base_offset + i as i64);
                            lateness.push(now.saturating_sub(h.entry.due_ms));
                        }
                    }
                    weir_metrics::metrics().delayed_delivered(lateness.into_iter());
                }
                Err(e) => {
                    tracing::warn!(partition = ?id, error = %e,
                        "delivering delayed records failed; retrying");
                    return;
                }
            }
            rest = later;
        }
    }

    /// Make the schedule durable: handed records go back into the store
    /// first, so a restart hands them out again (the feed then takes out
    /// those delivered).
    fn checkpoint(&mut self) -> Result<(), TimerError> {
        for handed in self.handed.values_mut() {
            for h in handed.values_mut().filter(|h| !h.in_store) {
                self.store.add(h.entry)?;
                h.in_store = true;
            }
        }
        let progress: Vec<(Uuid, i32, i64)> = self
            .fed
            .iter()
            .map(|(id, &offset)| (id.topic_id, id.partition, offset))
            .collect();
        self.store.checkpoint(&progress)?;
        self.last_checkpoint = Instant::now();
        Ok(())
    }

    /// Forget partitions no longer hosted here: their pending records went
    /// with them (a deleted topic), or another replica delivers them.
    fn forget_gone(&mut self, hosted: &HashSet<PartitionId>) {
        self.fed.retain(|id, _| hosted.contains(id));
        self.caught_up.retain(|id| hosted.contains(id));
        self.handed.retain(|id, _| hosted.contains(id));
        self.cancelling.retain(|id, _| hosted.contains(id));
    }

    /// Answer the tools' questions until `deadline`.
    fn answer_until(&mut self, deadline: Instant) -> Result<(), TimerError> {
        // One waiting question is answered even after a tick that overran,
        // so a busy mover still answers the tools; more only while time is
        // left, so a flood of questions cannot hold back the next tick.
        let mut answered = false;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if answered && left.is_zero() {
                return Ok(());
            }
            match self.queries.recv_timeout(left) {
                Ok(query) => {
                    self.answer(query)?;
                    answered = true;
                }
                Err(RecvTimeoutError::Timeout) => return Ok(()),
                Err(RecvTimeoutError::Disconnected) => {
                    std::thread::sleep(left);
                    return Ok(());
                }
            }
        }
    }
}

/// The pending offsets that copies or cancel markers of `partition` from
/// offset `fed` on name: in the log, but not fed to the store (uncommitted,
/// or committed since the feed).
fn unfed_markers(partition: &Partition, fed: i64) -> Result<HashSet<i64>, weir_storage::ReadError> {
    let offsets = partition.offsets();
    let mut found_offsets = HashSet::new();
    let mut from = fed.max(offsets.log_start);
    while from < offsets.log_end {
        let found = partition.delay_batches(from, offsets.log_end, FEED_READ_BYTES)?;
        for (_, batch) in &found.batches {
            if let Ok(scan) = scan_delays(batch) {
                found_offsets.extend(scan.copies.iter().map(|c| c.delayed_from));
                found_offsets.extend(scan.cancels.iter().map(|c| c.cancelled));
            }
        }
        if found.next <= from {
            break;
        }
        from = found.next;
    }
    Ok(found_offsets)
}
