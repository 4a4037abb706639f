//! One partition's state and its operations on the shared log: append
//! (validation, idempotent-producer checks, offset assignment), read, offset
//! and time look-ups, and log-start moves. The queue index itself is
//! `index.rs`.

use std::collections::{BTreeMap, HashMap};
use std::ops::ControlFlow;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use crate::batch::{self, BatchInfo};
use crate::error::{AppendError, ReadError, StorageError};
use crate::format::{self, ENTRY_HEADER_BYTES, EntryKind, IndexEntry};
use crate::index::QueueIndex;
use crate::io::IndexIo;
use crate::log::{LogInner, MarkerUpdate, Segment, Written, io_err, lock, read};
use crate::producer::{ProducerState, ProducerTable, SequenceCheck, SequencedBatch};
use crate::{
    AppendOutcome, CommitWait, DurableWait, PartitionConfig, PartitionId, PartitionOffsets,
    ReadOutcome, TimestampType,
};

/// Idempotent-producer state is rebuilt at open from at most this many of a
/// partition's newest batches. A producer with no batch among them is taken
/// for a new one (accepted at any sequence), as Kafka does once a producer's
/// state has expired.
const PRODUCER_REBUILD_BATCHES_MAX: u64 = 1 << 16;

/// Everything about a partition that changes, behind one lock.
pub(crate) struct PartitionState {
    pub config: PartitionConfig,
    pub leader_epoch: i32,
    /// Leader epochs and their start offsets (`epochs.rs`).
    pub epochs: crate::epochs::EpochCache,
    /// The queue index: batches in offset order, the newest in memory.
    pub index: QueueIndex,
    pub log_start: i64,
    /// The log-start offset the last durable checkpoint recorded: a restart
    /// starts from it, whatever the in-memory `log_start` says, so segment
    /// deletion keeps what lies between the two.
    pub checkpointed_log_start: i64,
    /// Offset after the last appended batch, durable or not.
    pub log_end: i64,
    /// Offset after the last batch consumers may read and `acks=all`
    /// waits for. Set only through [`Self::set_hw`]. On a single node it
    /// follows durability (or the log end under a relaxed flush policy);
    /// replication will move it.
    pub hw: i64,
    /// Watched by [`crate::CommitWait`]; carries `hw`.
    pub hw_tx: tokio::sync::watch::Sender<i64>,
    /// Offset after the last batch known to be fdatasync'd.
    pub durable_end: i64,
    pub producers: ProducerTable,
    pub removed: bool,
    /// A truncation is between writing its log entry and cutting the index
    /// file: appends are refused until it is done.
    pub truncating: bool,
    /// `delete.retention.ms`: how long compaction keeps a tombstone; `None`
    /// keeps tombstones forever.
    pub delete_retention_ms: Option<i64>,
    /// Offset up to which the last compaction built its key map: batches
    /// from here on are the "dirty" part that decides when to compact again.
    pub compacted_end: i64,
    /// Earliest time (ms) at which a tombstone kept by the last compaction
    /// may be removed; `i64::MAX` when none is waiting.
    pub tombstone_due_ms: i64,
}

impl PartitionState {
    /// Move the high watermark (and wake whoever waits on it).
    pub fn set_hw(&mut self, hw: i64) {
        self.hw = hw;
        self.hw_tx.send_replace(hw);
    }

    pub fn offsets(&self) -> PartitionOffsets {
        PartitionOffsets {
            log_start: self.log_start,
            high_watermark: self.hw,
            last_stable: self.hw,
            log_end: self.log_end,
        }
    }

    /// A durable checkpoint recorded `log_start`: batches below it are dead
    /// after a restart too, and their segments may go.
    pub fn recorded_log_start(&mut self, log_start: i64) {
        self.checkpointed_log_start = self.checkpointed_log_start.max(log_start);
    }

    /// The lowest log start a restart could come back with: what keeps segments.
    pub fn restart_log_start(&self) -> i64 {
        self.log_start.min(self.checkpointed_log_start)
    }

    /// Move the log start forward (never backwards, never past the high
    /// watermark), forgetting the batches it passes.
    pub fn advance_log_start(
        &mut self,
        offset: i64,
        ix: IndexIo<'_>,
    ) -> Result<bool, StorageError> {
        let offset = offset.min(self.hw);
        if offset <= self.log_start {
            return Ok(false);
        }
        self.log_start = offset;
        self.epochs.truncate_from_start(offset);
        self.index.trim(offset, ix)?;
        Ok(true)
    }

    /// Forget every batch from the one holding `offset` on (`offset` at or
    /// above the log start): the log end, durable end and high watermark
    /// come back to the new end, producer state is rebuilt. The index file
    /// is cut too when `cut_file`; otherwise the caller cuts it
    /// ([`crate::index::QueueIndex::truncate_file`]) before the partition
    /// takes appends again. Returns the first slot forgotten, if any was.
    pub fn truncate(
        &mut self,
        offset: i64,
        cut_file: bool,
        ix: IndexIo<'_>,
    ) -> Result<Option<u64>, StorageError> {
        let cut = self.index.truncate_memory(offset, ix)?;
        let new_end = match cut {
            Some((end, slot)) => {
                if cut_file {
                    self.index.truncate_file(slot, ix)?;
                }
                end
            }
            // Compaction may have removed the batches up to the log end.
            None => offset.min(self.log_end),
        };
        let new_end = new_end.max(self.log_start);
        self.log_end = self.log_end.min(new_end);
        self.durable_end = self.durable_end.min(new_end);
        let hw = self.hw.min(new_end);
        self.set_hw(hw);
        self.compacted_end = self.compacted_end.min(new_end);
        self.epochs.truncate_from_end(new_end);
        // The partition's own epoch stays, starting at the new end (as
        // recovery's `epochs::attach` has it).
        if self
            .epochs
            .latest()
            .is_none_or(|l| l.epoch < self.leader_epoch)
        {
            self.epochs.assign(self.leader_epoch, new_end);
        }
        self.rebuild_producers(ix)?;
        Ok(cut.map(|(_, slot)| slot))
    }

    /// Recovery met a truncation entry: apply it whole.
    pub fn truncate_to(&mut self, offset: i64, ix: IndexIo<'_>) -> Result<(), StorageError> {
        if offset < self.log_start {
            return Ok(());
        }
        self.truncate(offset, true, ix).map(|_| ())
    }

    /// Rebuild idempotent-producer state from the newest batches of the index.
    pub fn rebuild_producers(&mut self, ix: IndexIo<'_>) -> Result<(), StorageError> {
        let mut states: HashMap<i64, ProducerState> = HashMap::new();
        let to = self.index.next_slot();
        let from = to.saturating_sub(PRODUCER_REBUILD_BATCHES_MAX);
        self.index.scan(from, to, ix, |_, e| {
            if e.producer_id >= 0 && e.last_offset() >= self.log_start {
                states.entry(e.producer_id).or_default().record(
                    e.producer_epoch,
                    SequencedBatch {
                        first_seq: e.base_sequence,
                        last_seq: batch::increment_sequence(e.base_sequence, e.last_offset_delta),
                        base_offset: e.base_offset,
                        last_offset: e.last_offset(),
                    },
                );
            }
            ControlFlow::Continue(())
        })?;
        let mut table = ProducerTable::default();
        for (id, s) in states {
            table.put(id, s);
        }
        self.producers = table;
        Ok(())
    }

    /// Write the index entries only memory holds to the index file (no
    /// fsync); a failure poisons the log.
    pub fn flush_index(&mut self, log: &LogInner) -> Result<(), StorageError> {
        match self.index.flush(log.index_io()) {
            Ok(()) => Ok(()),
            Err(e) => Err(log.poison(e.to_string())),
        }
    }
}

/// A partition's identity and state.
pub(crate) struct PartitionInner {
    pub id: PartitionId,
    pub state: Mutex<PartitionState>,
    /// `state.leader_epoch`, readable without the state lock: Metadata and
    /// Fetch read it on the async runtime, where waiting behind an append's
    /// write would stall a worker thread.
    pub leader_epoch: std::sync::atomic::AtomicI32,
}

impl PartitionInner {
    /// The flusher made everything up to `end_offset` durable. Returns whether
    /// the high watermark moved.
    pub fn mark_durable(&self, end_offset: i64) -> Result<bool, StorageError> {
        let mut st = lock(&self.state)?;
        st.durable_end = st.durable_end.max(end_offset.min(st.log_end));
        let hw = st.hw.max(st.durable_end);
        let moved = hw != st.hw;
        if moved {
            st.set_hw(hw);
        }
        Ok(moved)
    }
}

/// Validate, sequence-check, patch and append one produce payload.
pub(crate) fn append(
    log: &LogInner,
    part: &Arc<PartitionInner>,
    payload: Bytes,
) -> Result<AppendOutcome, AppendError> {
    let _panic = log.panic_guard("an append");
    let mut st = lock(&part.state)?;
    let mut out = Vec::with_capacity(payload.len() + ENTRY_HEADER_BYTES);
    match prepare(log, part.id, &st, &payload, &mut out)? {
        Prepare::Duplicate(outcome) => Ok(outcome),
        Prepare::Write(p) => {
            let written = log.write_entries(&out, Some(marker(part, &st, p.end_offset)))?;
            commit(log, &mut st, p, written)
        }
    }
}

/// Append one payload to each of several partitions with a single write to
/// the log. Each partition is locked (in id order, so concurrent callers
/// cannot deadlock) from the offset assignment until its entries are written,
/// so entries of one partition reach the log in offset order. Results come
/// back in the order of `items`.
pub(crate) fn append_many(
    log: &LogInner,
    items: &[(Arc<PartitionInner>, Bytes)],
) -> Vec<Result<AppendOutcome, AppendError>> {
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.sort_by_key(|&i| items.get(i).map(|(p, _)| p.id));
    let ids = |i: &usize| items.get(*i).map(|(p, _)| p.id);
    if order.windows(2).any(|w| ids(&w[0]) == ids(&w[1])) {
        // A partition named twice would be locked twice: append one by one.
        return items
            .iter()
            .map(|(part, payload)| append(log, part, payload.clone()))
            .collect();
    }
    let _panic = log.panic_guard("an append");
    let mut results: Vec<Option<Result<AppendOutcome, AppendError>>> =
        items.iter().map(|_| None).collect();
    let mut guards = Vec::with_capacity(items.len());
    for (i, (part, payload)) in order.iter().filter_map(|&i| Some((i, items.get(i)?))) {
        match lock(&part.state) {
            Ok(st) => guards.push((i, part, payload, st)),
            Err(e) => {
                if let Some(slot) = results.get_mut(i) {
                    *slot = Some(Err(e.into()));
                }
            }
        }
    }
    let total: usize = items
        .iter()
        .map(|(_, payload)| payload.len() + ENTRY_HEADER_BYTES)
        .sum();
    let mut out = Vec::with_capacity(total);
    let mut prepared = Vec::new();
    let mut markers = Vec::new();
    for (g, (i, part, payload, st)) in guards.iter().enumerate() {
        let result = match prepare(log, part.id, st, payload, &mut out) {
            Ok(Prepare::Write(p)) => {
                markers.push(marker(part, st, p.end_offset));
                prepared.push((g, p));
                continue;
            }
            Ok(Prepare::Duplicate(outcome)) => Ok(outcome),
            Err(e) => Err(e),
        };
        if let Some(slot) = results.get_mut(*i) {
            *slot = Some(result);
        }
    }
    if !prepared.is_empty() {
        let written = log.write_entries_marked(&out, markers);
        for (g, p) in prepared {
            let Some((i, _, _, st)) = guards.get_mut(g) else {
                continue;
            };
            let result = match &written {
                Ok(written) => commit(log, st, p, *written),
                Err(e) => Err(AppendError::Storage(e.clone())),
            };
            if let Some(slot) = results.get_mut(*i) {
                *slot = Some(result);
            }
        }
    }
    drop(guards);
    results
        .into_iter()
        .map(|r| {
            r.unwrap_or_else(|| {
                Err(AppendError::InvalidBatch(
                    "the payload was not appended (a partition appears twice)",
                ))
            })
        })
        .collect()
}

/// Append batches a leader already stored, offsets assigned (a follower's
/// append): nothing is patched and no producer check runs, but producer
/// state is recorded, so this replica can take over as leader and still spot
/// a producer's retries. Batches must start at or after the log end.
pub(crate) fn append_replica(
    log: &LogInner,
    part: &Arc<PartitionInner>,
    payload: Bytes,
) -> Result<AppendOutcome, AppendError> {
    let _panic = log.panic_guard("a replica append");
    let mut st = lock(&part.state)?;
    if st.removed {
        return Err(AppendError::Storage(removed_error(part.id)));
    }
    if st.truncating {
        return Err(AppendError::Truncating);
    }
    let infos = batch::parse_replica_payload(&payload)?;
    let mut out = Vec::with_capacity(payload.len() + infos.len() * ENTRY_HEADER_BYTES);
    let mut entries = Vec::with_capacity(infos.len());
    let mut producers: HashMap<i64, ProducerState> = HashMap::new();
    let mut next = st.log_end;
    let mut first = None;
    let mut epochs = Vec::with_capacity(infos.len());
    for info in &infos {
        let src = payload
            .get(info.start..info.start + info.len)
            .unwrap_or_default();
        let base = format::be_i64(src, 0).ok_or(AppendError::CorruptBatch)?;
        if base < next {
            return Err(AppendError::ReplicaOffsetOrder {
                log_end: next,
                got: base,
            });
        }
        first.get_or_insert(base);
        epochs.push((
            base,
            format::be_i32(src, 12).ok_or(AppendError::CorruptBatch)?,
        ));
        let at = out.len() as u64;
        format::put_entry(&mut out, EntryKind::Batch, part.id, base, src);
        entries.push((at, index_entry(info, base)));
        let last = base + i64::from(info.last_offset_delta);
        if info.producer_id >= 0 {
            let state = producers.entry(info.producer_id).or_insert_with(|| {
                st.producers
                    .get(info.producer_id)
                    .cloned()
                    .unwrap_or_default()
            });
            state.record(
                info.producer_epoch,
                SequencedBatch {
                    first_seq: info.base_sequence,
                    last_seq: info.last_sequence(),
                    base_offset: base,
                    last_offset: last,
                },
            );
        }
        next = last + 1;
    }
    let prepared = Prepared {
        entries,
        buf_end: out.len() as u64,
        producers,
        base_offset: first.unwrap_or(st.log_end),
        end_offset: next,
        log_append_time: -1,
        gaps_allowed: true,
        epochs,
    };
    let written = log.write_entries(&out, Some(marker(part, &st, next)))?;
    let outcome = commit(log, &mut st, prepared, written);
    part.leader_epoch.store(st.leader_epoch, Ordering::SeqCst);
    outcome
}

/// What checking a payload decided.
enum Prepare {
    /// Encoded into the shared buffer; write it, then [`commit`].
    Write(Prepared),
    /// A retried duplicate: answered with the original offsets, nothing written.
    Duplicate(AppendOutcome),
}

/// A checked payload whose entries sit in the shared write buffer.
struct Prepared {
    /// Each index entry with the position of its log entry in the buffer.
    entries: Vec<(u64, IndexEntry)>,
    /// End of this payload's entries in the buffer.
    buf_end: u64,
    producers: HashMap<i64, ProducerState>,
    base_offset: i64,
    end_offset: i64,
    log_append_time: i64,
    /// A replica's batches keep the leader's offsets, which compaction may
    /// have left gaps between; a leader's own are contiguous.
    gaps_allowed: bool,
    /// A replica's batches: (base offset, leader epoch) of each.
    epochs: Vec<(i64, i32)>,
}

/// What an append tells the flusher about its partition.
fn marker(part: &Arc<PartitionInner>, st: &PartitionState, end_offset: i64) -> MarkerUpdate {
    MarkerUpdate {
        partition: part.clone(),
        end_offset,
        flush_messages: st.config.flush_messages,
        flush_ms: st.config.flush_ms,
    }
}

/// Validate and sequence-check a payload, then encode its entries (broker
/// fields patched) at the end of `out`. Changes nothing in the partition.
fn prepare(
    log: &LogInner,
    id: PartitionId,
    st: &PartitionState,
    payload: &Bytes,
    out: &mut Vec<u8>,
) -> Result<Prepare, AppendError> {
    if st.removed {
        return Err(AppendError::Storage(removed_error(id)));
    }
    if st.truncating {
        return Err(AppendError::Truncating);
    }
    let infos = batch::parse_payload(payload, st.config.max_message_bytes)?;
    let now_ms = log.clock.now_ms();

    // Sequence checks, against a scratch copy so a refused payload changes nothing.
    let mut scratch: HashMap<i64, ProducerState> = HashMap::new();
    let mut duplicates = Vec::new();
    let mut next = st.log_end;
    for info in &infos {
        let count = i64::from(info.last_offset_delta) + 1;
        if info.producer_id >= 0 {
            let state = scratch
                .get(&info.producer_id)
                .or_else(|| st.producers.get(info.producer_id));
            let check = ProducerState::check(
                state,
                info.producer_id,
                info.producer_epoch,
                info.base_sequence,
                info.last_sequence(),
            )?;
            match check {
                SequenceCheck::Duplicate(d) => {
                    duplicates.push(d);
                    continue;
                }
                SequenceCheck::Accept => {
                    let mut s = state.cloned().unwrap_or_default();
                    s.record(
                        info.producer_epoch,
                        SequencedBatch {
                            first_seq: info.base_sequence,
                            last_seq: info.last_sequence(),
                            base_offset: next,
                            last_offset: next + count - 1,
                        },
                    );
                    scratch.insert(info.producer_id, s);
                }
            }
        }
        next += count;
    }
    if !duplicates.is_empty() {
        if duplicates.len() != infos.len() {
            return Err(AppendError::InvalidBatch(
                "a payload mixes retried duplicate batches with new ones",
            ));
        }
        return Ok(Prepare::Duplicate(duplicate_outcome(log, st, &duplicates)?));
    }

    // Build the entries: header + batch with broker-owned fields patched.
    let mut entries = Vec::with_capacity(infos.len());
    let mut offset = st.log_end;
    let leader_epoch = st.leader_epoch;
    let log_append = st.config.timestamp_type == TimestampType::LogAppendTime;
    for info in &infos {
        let src = payload
            .get(info.start..info.start + info.len)
            .unwrap_or_default();
        let mut info = *info;
        let position_in_buf = out.len() as u64;
        format::put_patched_entry(out, EntryKind::Batch, id, offset, src, |b| {
            batch::patch_offsets(b, offset, leader_epoch);
            if log_append {
                info.attributes = batch::stamp_log_append_time(b, now_ms);
                info.max_timestamp = now_ms;
            }
        });
        entries.push((position_in_buf, index_entry(&info, offset)));
        offset += i64::from(info.last_offset_delta) + 1;
    }
    Ok(Prepare::Write(Prepared {
        entries,
        buf_end: out.len() as u64,
        producers: scratch,
        base_offset: st.log_end,
        end_offset: offset,
        log_append_time: if log_append { now_ms } else { -1 },
        gaps_allowed: false,
        epochs: Vec::new(),
    }))
}

/// Record a written payload in the partition: index entries (in memory, and
/// buffered for the index file, which the checkpoint fsyncs), producer
/// state and log end. `written` says where the buffer's first byte went.
fn commit(
    log: &LogInner,
    st: &mut PartitionState,
    p: Prepared,
    written: Written,
) -> Result<AppendOutcome, AppendError> {
    // Paired with `prepare`, which numbered the batches from the log end
    // under this same lock: offsets stay contiguous.
    let follows = if p.gaps_allowed {
        p.base_offset >= st.log_end
    } else {
        p.base_offset == st.log_end
    };
    log.check(follows, || {
        format!(
            "a batch's base offset {} is the log end {} of {:?}",
            p.base_offset,
            st.log_end,
            st.index.path()
        )
    })?;
    let start = written.position;
    let hot_max = log.index_hot_entries_max();
    let mut expected = p.base_offset;
    for (rel, mut e) in p.entries {
        e.position = start + rel;
        let inside = rel + (ENTRY_HEADER_BYTES as u64) + u64::from(e.size) <= p.buf_end;
        let in_order = if p.gaps_allowed {
            e.base_offset >= expected
        } else {
            e.base_offset == expected
        };
        log.check(in_order && inside, || {
            format!(
                "batch {} (expected {expected}) at position {} lies inside what was written",
                e.base_offset, e.position
            )
        })?;
        expected = e.last_offset() + 1;
        if let Err(e) = st.index.push(e, written.segment, hot_max, log.index_io()) {
            return Err(log.poison(e.to_string()).into());
        }
    }
    log.checkpoint_dirty.store(true, Ordering::SeqCst);
    for (id, s) in p.producers {
        st.producers.put(id, s);
    }
    st.log_end = p.end_offset;
    if p.gaps_allowed {
        // A replica's batches carry the leader's epochs: learn each.
        // The log's epochs never go back: later leader appends stamp at
        // least the newest one (as recovery's rule has it).
        let mut learned = false;
        for (base, epoch) in &p.epochs {
            learned |= st.epochs.learn(*epoch, *base);
            st.leader_epoch = st.leader_epoch.max(*epoch);
        }
        if learned {
            log.leader_epochs.mark_dirty();
        }
    } else {
        crate::epochs::learn_appended(log, st, p.base_offset);
    }
    let strict = st.config.flush_messages <= 1;
    if !strict {
        st.set_hw(p.end_offset);
        log.bump_progress();
    }
    Ok(AppendOutcome {
        base_offset: p.base_offset,
        last_offset: p.end_offset - 1,
        log_append_time: p.log_append_time,
        log_start_offset: st.log_start,
        duplicate: false,
        durable: if strict {
            DurableWait::pending(log.durable_tx.subscribe(), start + p.buf_end)
        } else {
            DurableWait::ready()
        },
        committed: commit_wait(log, st, p.end_offset),
    })
}

/// A wait for `st`'s high watermark to reach `end_offset`.
fn commit_wait(log: &LogInner, st: &PartitionState, end_offset: i64) -> CommitWait {
    CommitWait::new(st.hw_tx.subscribe(), log.durable_tx.subscribe(), end_offset)
}

fn index_entry(info: &BatchInfo, base_offset: i64) -> IndexEntry {
    IndexEntry {
        base_offset,
        last_offset_delta: info.last_offset_delta,
        size: info.len as u32,
        position: 0,
        max_timestamp: info.max_timestamp,
        producer_id: info.producer_id,
        producer_epoch: info.producer_epoch,
        attributes: info.attributes,
        base_sequence: info.base_sequence,
        running_max_ts: i64::MIN,
    }
}

fn duplicate_outcome(
    log: &LogInner,
    st: &PartitionState,
    dups: &[SequencedBatch],
) -> Result<AppendOutcome, StorageError> {
    let base_offset = dups.first().map_or(-1, |d| d.base_offset);
    let last_offset = dups.last().map_or(-1, |d| d.last_offset);
    let strict = st.config.flush_messages <= 1;
    let durable = if !strict || last_offset < st.durable_end {
        DurableWait::ready()
    } else {
        // The original is written but not yet durable: wait for its end.
        let end = st
            .index
            .find(last_offset, log.index_io())?
            .map_or(0, |(_, e)| e.end_position());
        DurableWait::pending(log.durable_tx.subscribe(), end)
    };
    Ok(AppendOutcome {
        base_offset,
        last_offset,
        log_append_time: -1,
        log_start_offset: st.log_start,
        duplicate: true,
        durable,
        committed: commit_wait(log, st, last_offset + 1),
    })
}

pub(crate) fn removed_error(id: PartitionId) -> StorageError {
    StorageError::Poisoned {
        reason: Arc::from(format!(
            "partition {}-{} was removed",
            id.topic_id, id.partition
        )),
    }
}

/// One stored batch to read: where it is and what it must be.
pub(crate) struct Located {
    pub entry: IndexEntry,
    pub segment: Arc<Segment>,
}

/// Index entries read per positional read when locating batches for a read.
const LOCATE_CHUNK_ENTRIES: usize = 64;

/// Locate the batches from index slot `from` on (below the high watermark)
/// for a read of up to `limit` bytes, at least one.
fn locate(
    log: &LogInner,
    st: &PartitionState,
    from: u64,
    limit: usize,
) -> Result<Vec<Located>, StorageError> {
    let mut entries = Vec::new();
    let mut total = 0usize;
    let mut slot = from;
    'chunks: loop {
        let chunk = st
            .index
            .read_range(slot, LOCATE_CHUNK_ENTRIES, log.index_io())?;
        if chunk.is_empty() {
            break;
        }
        slot += chunk.len() as u64;
        for e in chunk {
            if e.base_offset >= st.hw || (!entries.is_empty() && total + e.size as usize > limit) {
                break 'chunks;
            }
            total += e.size as usize;
            entries.push(e);
            if total >= limit {
                break 'chunks;
            }
        }
    }
    let segments = read(&log.segments)?;
    let found = locate_in(&segments, st, entries);
    // Poisoning takes the writer lock, which comes before `segments`.
    drop(segments);
    found.map_err(|broken| match broken {
        Broken::Invariant(what) => log.poison(format!("invariant broken: {what}")),
        Broken::Error(e) => e,
    })
}

/// Why [`locate_in`] stopped.
enum Broken {
    Invariant(String),
    Error(StorageError),
}

/// Find the segment of each entry under the segments lock, checking what
/// the write side promised: offsets ascending, each batch inside its segment.
fn locate_in(
    segments: &BTreeMap<u64, Arc<Segment>>,
    st: &PartitionState,
    entries: Vec<IndexEntry>,
) -> Result<Vec<Located>, Broken> {
    let mut out = Vec::with_capacity(entries.len());
    let mut prev_last = i64::MIN;
    for e in entries {
        if e.base_offset <= prev_last {
            return Err(Broken::Invariant(format!(
                "index entry {} of {:?} follows offset {prev_last}",
                e.base_offset,
                st.index.path()
            )));
        }
        prev_last = e.last_offset();
        let segment = segments
            .range(..=e.position)
            .next_back()
            .map(|(_, s)| s.clone())
            .ok_or_else(|| {
                Broken::Error(StorageError::Corrupt {
                    file: "commit log".into(),
                    detail: format!("no segment holds position {}", e.position),
                })
            })?;
        let next_base = segments.range(segment.base + 1..).next().map(|(b, _)| *b);
        if next_base.is_some_and(|next| e.end_position() > next) {
            return Err(Broken::Invariant(format!(
                "batch {} at positions {}..{} runs past its segment {}",
                e.base_offset,
                e.position,
                e.end_position(),
                segment.path.display()
            )));
        }
        out.push(Located { entry: e, segment });
    }
    Ok(out)
}

/// Read located batches: each run of batches adjacent in one segment with one
/// pread, then the entry headers between them cut out.
pub(crate) fn read_located(
    log: &LogInner,
    part: PartitionId,
    items: &[Located],
) -> Result<Vec<u8>, StorageError> {
    let total: usize = items
        .iter()
        .map(|l| l.entry.size as usize + ENTRY_HEADER_BYTES)
        .sum();
    let mut out = Vec::with_capacity(total);
    let mut i = 0;
    while i < items.len() {
        let first = &items[i];
        let mut j = i + 1;
        while let Some(next) = items.get(j) {
            let prev = &items[j - 1];
            if !Arc::ptr_eq(&next.segment, &first.segment)
                || next.entry.position != prev.entry.end_position()
            {
                break;
            }
            j += 1;
        }
        let run = &items[i..j];
        let run_len = (run[run.len() - 1].entry.end_position() - first.entry.position) as usize;
        let at = out.len();
        out.resize(at + run_len, 0);
        let file_offset = first.segment.file_offset(first.entry.position);
        let buf = out.get_mut(at..).unwrap_or_default();
        crate::io::failpoint_for(log.io.as_ref(), "storage::segment_read")
            .and_then(|()| log.io.read_exact_at(&first.segment.file, buf, file_offset))
            .map_err(|e| io_err(format!("reading {}", first.segment.path.display()), e))?;
        // Cut the headers out in place, checking each one names this batch.
        let mut dst = at;
        let mut src = at;
        for l in run {
            let header = out
                .get(src..src + ENTRY_HEADER_BYTES)
                .and_then(format::decode_entry_header);
            // Paired with the write side: the entry the index points at names
            // the batch the index expects there.
            let ok = header.is_some_and(|h| {
                h.partition == part
                    && h.base_offset == l.entry.base_offset
                    && h.batch_len() == l.entry.size as usize
            });
            log.check(ok, || {
                format!(
                    "the entry read at position {} of {} is batch {} of {}-{}",
                    l.entry.position,
                    first.segment.path.display(),
                    l.entry.base_offset,
                    part.topic_id,
                    part.partition
                )
            })?;
            let body = src + ENTRY_HEADER_BYTES;
            out.copy_within(body..body + l.entry.size as usize, dst);
            dst += l.entry.size as usize;
            src = body + l.entry.size as usize;
        }
        out.truncate(dst);
        i = j;
    }
    Ok(out)
}

/// Read whole batches from `offset`, at most `max_bytes` (at least one batch).
pub(crate) fn read_from(
    log: &LogInner,
    part: &PartitionInner,
    offset: i64,
    max_bytes: usize,
) -> Result<ReadOutcome, ReadError> {
    let (items, offsets) = {
        let st = lock(&part.state)?;
        let offsets = st.offsets();
        if offset < st.log_start || offset > st.hw {
            return Err(ReadError::OffsetOutOfRange {
                offset,
                log_start: st.log_start,
                log_end: st.hw,
            });
        }
        if offset == st.hw {
            return Ok(ReadOutcome {
                records: Bytes::new(),
                offsets,
            });
        }
        // A compacted partition has gaps: a removed offset reads from the next kept batch.
        let Some(from) = st.index.find_from(offset, log.index_io())? else {
            return Ok(ReadOutcome {
                records: Bytes::new(),
                offsets,
            });
        };
        let limit = max_bytes.min(log.config.read_bytes_max);
        (locate(log, &st, from, limit)?, offsets)
    };
    let records = read_located(log, part.id, &items)?;
    Ok(ReadOutcome {
        records: Bytes::from(records),
        offsets,
    })
}

/// First record at or after `timestamp`, as (offset, timestamp).
pub(crate) fn offset_for_timestamp(
    log: &LogInner,
    part: &PartitionInner,
    timestamp: i64,
) -> Result<Option<(i64, i64)>, ReadError> {
    loop_candidates(log, part, |st| {
        Ok((st.index.find_time(timestamp, log.index_io())?, timestamp))
    })
}

/// The record with the largest timestamp (the first one, if several share it).
pub(crate) fn max_timestamp(
    log: &LogInner,
    part: &PartitionInner,
) -> Result<Option<(i64, i64)>, ReadError> {
    loop_candidates(log, part, |st| {
        Ok(match st.index.max_timestamp_entry(st.hw, log.index_io())? {
            Some((slot, e)) => (slot, e.max_timestamp),
            None => (st.index.next_slot(), i64::MAX),
        })
    })
}

/// Candidate batches a time look-up reads, at most: a batch's records may
/// all sit below the log start, so a few more than one.
const TIME_CANDIDATES_MAX: usize = 4;

/// Scan visible batches from the slot `pick` chooses for the first record
/// at or after the timestamp it returns.
fn loop_candidates(
    log: &LogInner,
    part: &PartitionInner,
    pick: impl Fn(&PartitionState) -> Result<(u64, i64), StorageError>,
) -> Result<Option<(i64, i64)>, ReadError> {
    let (candidates, log_start, timestamp) = {
        let st = lock(&part.state)?;
        let (from, timestamp) = pick(&st)?;
        let mut items = Vec::new();
        st.index
            .scan(from, st.index.next_slot(), log.index_io(), |_, e| {
                if e.base_offset >= st.hw {
                    return ControlFlow::Break(());
                }
                if e.max_timestamp >= timestamp {
                    items.push(*e);
                    if items.len() >= TIME_CANDIDATES_MAX {
                        return ControlFlow::Break(());
                    }
                }
                ControlFlow::Continue(())
            })?;
        let segs = read(&log.segments)?;
        let mut located = Vec::with_capacity(items.len());
        for e in items {
            if let Some((_, s)) = segs.range(..=e.position).next_back() {
                located.push(Located {
                    entry: e,
                    segment: s.clone(),
                });
            }
        }
        (located, st.log_start, timestamp)
    };
    for l in &candidates {
        let bytes = Bytes::from(read_located(log, part.id, std::slice::from_ref(l))?);
        if let Some(found) = batch::find_record_at_or_after(&bytes, log_start, timestamp) {
            return Ok(Some(found));
        }
    }
    Ok(None)
}
