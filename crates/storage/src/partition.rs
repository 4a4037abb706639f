//! One partition's queue index and its operations on the shared log:
//! append (validation, idempotent-producer checks, offset assignment), read,
//! offset and time look-ups, and log-start moves.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use crate::batch::{self, BatchInfo};
use crate::error::{AppendError, ReadError, StorageError};
use crate::format::{
    self, ENTRY_HEADER_BYTES, EntryKind, INDEX_ENTRY_BYTES, INDEX_HEADER_BYTES, IndexEntry,
};
use crate::log::{LogInner, MarkerUpdate, Segment, io_err, lock, read};
use crate::producer::{ProducerState, ProducerTable, SequenceCheck, SequencedBatch};
use crate::{
    AppendOutcome, DurableWait, PartitionConfig, PartitionId, PartitionOffsets, ReadOutcome,
    TimestampType,
};

/// Buffered index entries of one partition are written out at this size,
/// even before the next checkpoint (128 entries), which bounds the memory
/// many busy partitions hold between checkpoints.
const INDEX_PENDING_BYTES_MAX: usize = 8 * 1024;

/// One batch in the in-memory queue index.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MemEntry {
    pub entry: IndexEntry,
    /// Entry number in the index file.
    pub slot: u64,
    /// The largest max timestamp of this and every earlier live entry, so the
    /// time look-up can binary-search even when timestamps go backwards.
    pub running_max_ts: i64,
}

/// Everything about a partition that changes, behind one lock.
pub(crate) struct PartitionState {
    pub config: PartitionConfig,
    pub leader_epoch: i32,
    /// Leader epochs and their start offsets (`epochs.rs`).
    pub epochs: crate::epochs::EpochCache,
    /// Live batches in offset order (the first may start below `log_start`).
    pub entries: VecDeque<MemEntry>,
    pub log_start: i64,
    /// The log-start offset the last durable checkpoint recorded: a restart
    /// starts from it, whatever the in-memory `log_start` says.
    pub checkpointed_log_start: i64,
    /// Batches trimmed below `log_start` that are not below
    /// `checkpointed_log_start`: a crash would bring them back, so segment
    /// deletion counts them as live until a checkpoint records their end.
    pub dead_unrecorded: Vec<IndexEntry>,
    pub log_end: i64,
    pub hw: i64,
    /// Offset after the last batch known to be fdatasync'd.
    pub durable_end: i64,
    /// Bytes of live batches, for `retention.bytes`.
    pub live_bytes: u64,
    /// The index file, opened when written through [`LogInner::index_files`].
    pub index_path: PathBuf,
    pub next_slot: u64,
    /// Index entries for slots from `index_pending_slot` on, not yet written
    /// to the index file. Only the checkpoint needs them on disk (recovery
    /// rebuilds everything past it from the log), so appends buffer them and
    /// the checkpoint writes them in one call instead of one per append.
    pub index_pending: Vec<u8>,
    pub index_pending_slot: u64,
    pub producers: ProducerTable,
    pub removed: bool,
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
    pub fn offsets(&self) -> PartitionOffsets {
        PartitionOffsets {
            log_start: self.log_start,
            high_watermark: self.hw,
            last_stable: self.hw,
            log_end: self.log_end,
        }
    }

    /// Position in `entries` of the batch holding `offset`.
    pub fn find(&self, offset: i64) -> Option<usize> {
        let i = self
            .entries
            .partition_point(|e| e.entry.base_offset <= offset);
        let i = i.checked_sub(1)?;
        (self.entries.get(i)?.entry.last_offset() >= offset).then_some(i)
    }

    /// Position in `entries` of the first batch ending at or after `offset`:
    /// the batch holding it, or the next one when compaction removed it.
    pub fn find_from(&self, offset: i64) -> Option<usize> {
        let i = self
            .entries
            .partition_point(|e| e.entry.last_offset() < offset);
        (i < self.entries.len()).then_some(i)
    }

    pub fn push_entry(&mut self, entry: IndexEntry, slot: u64) {
        let prev = self.entries.back().map_or(i64::MIN, |e| e.running_max_ts);
        self.live_bytes += u64::from(entry.size);
        self.entries.push_back(MemEntry {
            entry,
            slot,
            running_max_ts: prev.max(entry.max_timestamp),
        });
    }

    /// Drop batches that end below the log start.
    pub fn trim(&mut self) {
        let mut dropped = false;
        while let Some(front) = self.entries.front() {
            if front.entry.last_offset() >= self.log_start {
                break;
            }
            self.live_bytes = self.live_bytes.saturating_sub(u64::from(front.entry.size));
            if front.entry.last_offset() >= self.checkpointed_log_start {
                self.dead_unrecorded.push(front.entry);
            }
            self.entries.pop_front();
            dropped = true;
        }
        if dropped {
            let mut running = i64::MIN;
            for e in &mut self.entries {
                running = running.max(e.entry.max_timestamp);
                e.running_max_ts = running;
            }
        }
    }

    /// A durable checkpoint recorded `log_start`: batches below it are dead
    /// after a restart too, and their segments may go.
    pub fn recorded_log_start(&mut self, log_start: i64) {
        self.checkpointed_log_start = self.checkpointed_log_start.max(log_start);
        let recorded = self.checkpointed_log_start;
        self.dead_unrecorded.retain(|e| e.last_offset() >= recorded);
    }

    /// Move the log start forward (never backwards, never past the high watermark).
    pub fn advance_log_start(&mut self, offset: i64) -> bool {
        let offset = offset.min(self.hw);
        if offset <= self.log_start {
            return false;
        }
        self.log_start = offset;
        self.epochs.truncate_from_start(offset);
        self.trim();
        true
    }

    /// Rebuild idempotent-producer state from the index.
    pub fn rebuild_producers(&mut self) {
        let mut table = ProducerTable::default();
        let mut states: HashMap<i64, ProducerState> = HashMap::new();
        for e in &self.entries {
            let e = e.entry;
            if e.producer_id < 0 {
                continue;
            }
            let state = states.entry(e.producer_id).or_default();
            state.record(
                e.producer_epoch,
                SequencedBatch {
                    first_seq: e.base_sequence,
                    last_seq: batch::increment_sequence(e.base_sequence, e.last_offset_delta),
                    base_offset: e.base_offset,
                    last_offset: e.last_offset(),
                },
            );
        }
        for (id, s) in states {
            table.put(id, s);
        }
        self.producers = table;
    }

    /// Write index entries at their slots (no fsync): appended entries are
    /// buffered until [`Self::flush_index`]; any other write first flushes
    /// the buffer, so slots reach the file in the order they were written.
    pub fn write_index(
        &mut self,
        first_slot: u64,
        bytes: &[u8],
        log: &LogInner,
    ) -> Result<(), StorageError> {
        let count = (bytes.len() / INDEX_ENTRY_BYTES) as u64;
        log.check(first_slot + count <= self.next_slot, || {
            format!(
                "index slots {first_slot}..{} lie below the next slot {} of {:?}",
                first_slot + count,
                self.next_slot,
                self.index_path
            )
        })?;
        let pending_end =
            self.index_pending_slot + (self.index_pending.len() / INDEX_ENTRY_BYTES) as u64;
        if !self.index_pending.is_empty() && first_slot != pending_end {
            self.flush_index(log)?;
        }
        if self.index_pending.is_empty() {
            self.index_pending_slot = first_slot;
        }
        self.index_pending.extend_from_slice(bytes);
        log.checkpoint_dirty.store(true, Ordering::SeqCst);
        if self.index_pending.len() >= INDEX_PENDING_BYTES_MAX {
            self.flush_index(log)?;
        }
        Ok(())
    }

    /// Write the buffered index entries to the index file (no fsync) and
    /// give the buffer's memory back.
    pub fn flush_index(&mut self, log: &LogInner) -> Result<(), StorageError> {
        if self.index_pending.is_empty() {
            return Ok(());
        }
        let bytes = std::mem::take(&mut self.index_pending);
        let at = INDEX_HEADER_BYTES + self.index_pending_slot * INDEX_ENTRY_BYTES as u64;
        let written = log
            .index_files
            .write_at(log.io.as_ref(), &self.index_path, &bytes, at);
        if let Err(e) = written {
            return Err(log.poison(e.to_string()));
        }
        Ok(())
    }
}

/// A partition's identity and state.
pub(crate) struct PartitionInner {
    pub id: PartitionId,
    pub state: Mutex<PartitionState>,
}

impl PartitionInner {
    /// The flusher made everything up to `end_offset` durable. Returns whether
    /// the high watermark moved.
    pub fn mark_durable(&self, end_offset: i64) -> Result<bool, StorageError> {
        let mut st = lock(&self.state)?;
        st.durable_end = st.durable_end.max(end_offset.min(st.log_end));
        let hw = st.hw.max(st.durable_end);
        let moved = hw != st.hw;
        st.hw = hw;
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
            let start = log.write_entries(&out, Some(marker(part, &st, p.end_offset)))?;
            commit(log, &mut st, p, start)
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
                Ok(start) => commit(log, st, p, *start),
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
        return Ok(Prepare::Duplicate(duplicate_outcome(log, st, &duplicates)));
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
    }))
}

/// Record a written payload in the partition: index entries (in memory, and
/// buffered for the index file, which the checkpoint fsyncs), producer
/// state and log end. `start` is the log position of the buffer's first byte.
fn commit(
    log: &LogInner,
    st: &mut PartitionState,
    p: Prepared,
    start: u64,
) -> Result<AppendOutcome, AppendError> {
    // Paired with `prepare`, which numbered the batches from the log end
    // under this same lock: offsets stay contiguous.
    log.check(p.base_offset == st.log_end, || {
        format!(
            "a batch's base offset {} is the log end {} of {:?}",
            p.base_offset, st.log_end, st.index_path
        )
    })?;
    let first_slot = st.next_slot;
    let mut index_bytes = Vec::with_capacity(p.entries.len() * INDEX_ENTRY_BYTES);
    let mut expected = p.base_offset;
    for (i, (rel, mut e)) in p.entries.into_iter().enumerate() {
        e.position = start + rel;
        let inside = rel + (ENTRY_HEADER_BYTES as u64) + u64::from(e.size) <= p.buf_end;
        log.check(e.base_offset == expected && inside, || {
            format!(
                "batch {} (expected {expected}) at position {} lies inside what was written",
                e.base_offset, e.position
            )
        })?;
        expected = e.last_offset() + 1;
        index_bytes.extend_from_slice(&e.encode());
        st.push_entry(e, first_slot + i as u64);
    }
    st.next_slot += (index_bytes.len() / INDEX_ENTRY_BYTES) as u64;
    st.write_index(first_slot, &index_bytes, log)?;
    for (id, s) in p.producers {
        st.producers.put(id, s);
    }
    st.log_end = p.end_offset;
    crate::epochs::learn_appended(log, st, p.base_offset);
    let strict = st.config.flush_messages <= 1;
    if !strict {
        st.hw = p.end_offset;
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
    })
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
    }
}

fn duplicate_outcome(
    log: &LogInner,
    st: &PartitionState,
    dups: &[SequencedBatch],
) -> AppendOutcome {
    let base_offset = dups.first().map_or(-1, |d| d.base_offset);
    let last_offset = dups.last().map_or(-1, |d| d.last_offset);
    let strict = st.config.flush_messages <= 1;
    let durable = if !strict || last_offset < st.durable_end {
        DurableWait::ready()
    } else {
        // The original is written but not yet durable: wait for its end.
        let end = st
            .find(last_offset)
            .and_then(|i| st.entries.get(i))
            .map_or(0, |e| e.entry.end_position());
        DurableWait::pending(log.durable_tx.subscribe(), end)
    };
    AppendOutcome {
        base_offset,
        last_offset,
        log_append_time: -1,
        log_start_offset: st.log_start,
        duplicate: true,
        durable,
    }
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

/// Locate the batches in `st.entries[from..]` (below the high watermark) for a read
/// of up to `limit` bytes, at least one.
fn locate(
    log: &LogInner,
    st: &PartitionState,
    from: usize,
    limit: usize,
) -> Result<Vec<Located>, StorageError> {
    let segments = read(&log.segments)?;
    let found = locate_in(&segments, st, from, limit);
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

/// [`locate`] under the segments lock, checking what the write side
/// promised: offsets ascending, each batch inside its segment.
fn locate_in(
    segments: &BTreeMap<u64, Arc<Segment>>,
    st: &PartitionState,
    from: usize,
    limit: usize,
) -> Result<Vec<Located>, Broken> {
    let mut out = Vec::new();
    let mut total = 0usize;
    let mut prev_last = i64::MIN;
    for e in st.entries.iter().skip(from) {
        let e = e.entry;
        if e.base_offset >= st.hw {
            break;
        }
        if !out.is_empty() && total + e.size as usize > limit {
            break;
        }
        if e.base_offset <= prev_last {
            return Err(Broken::Invariant(format!(
                "index entry {} of {:?} follows offset {prev_last}",
                e.base_offset, st.index_path
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
        total += e.size as usize;
        out.push(Located { entry: e, segment });
        if total >= limit {
            break;
        }
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
        first
            .segment
            .file
            .read_exact_at(buf, file_offset)
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
        let Some(from) = st.find_from(offset) else {
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
        let i = st.entries.partition_point(|e| e.running_max_ts < timestamp);
        (i, timestamp)
    })
}

/// The record with the largest timestamp (the first one, if several share it).
pub(crate) fn max_timestamp(
    log: &LogInner,
    part: &PartitionInner,
) -> Result<Option<(i64, i64)>, ReadError> {
    loop_candidates(log, part, |st| {
        let visible = st.entries.partition_point(|e| e.entry.base_offset < st.hw);
        let max = visible
            .checked_sub(1)
            .and_then(|i| st.entries.get(i))
            .map_or(i64::MAX, |e| e.running_max_ts);
        let i = st.entries.partition_point(|e| e.running_max_ts < max);
        (i, max)
    })
}

/// Scan visible batches from the index `pick` chooses for the first record at
/// or after the timestamp it returns.
fn loop_candidates(
    log: &LogInner,
    part: &PartitionInner,
    pick: impl Fn(&PartitionState) -> (usize, i64),
) -> Result<Option<(i64, i64)>, ReadError> {
    let (candidates, log_start, timestamp) = {
        let st = lock(&part.state)?;
        let (from, timestamp) = pick(&st);
        let mut items = Vec::new();
        for e in st.entries.iter().skip(from) {
            if e.entry.base_offset >= st.hw {
                break;
            }
            if e.entry.max_timestamp >= timestamp {
                items.push(e.entry);
                // A batch's records may all sit below the log start; keep a few more.
                if items.len() >= 4 {
                    break;
                }
            }
        }
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
