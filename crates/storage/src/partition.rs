//! One partition's state and its operations on the shared log: append
//! (validation, idempotent-producer checks, transactions and their markers,
//! offset assignment), read (up to the high watermark or the last stable
//! offset), offset and time look-ups, and log-start moves. The queue index
//! itself is `index.rs`; producer state is `producer.rs`, its snapshots
//! `snapshots.rs`, and the aborted transactions `aborted.rs`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use crate::aborted::{AbortedIndex, AbortedTxn};
use crate::batch::{self, BatchInfo};
use crate::error::{AppendError, ReadError, StorageError, TruncateError};
use crate::format::{
    self, DELAY_MARK, ENTRY_BATCH_BYTES_MAX, ENTRY_HEADER_BYTES, EntryKind, IndexEntry,
    TAG_SUMMARY_UNKNOWN,
};
use crate::index::QueueIndex;
use crate::io::IndexIo;
use crate::log::{MarkerUpdate, Segment, Written, io_err, lock, read};
use crate::producer::{ProducerState, ProducerTable, SequenceCheck, SequencedBatch, TxnMarker};
use crate::store::Store;
use crate::summary::{RecordsSummary, Summaries, summarize_payload};
use crate::{
    AppendOutcome, CommitWait, DurableWait, PartitionConfig, PartitionId, PartitionOffsets,
    ReadBound, ReadOutcome, TimestampType,
};

/// Idempotent-producer state is rebuilt at open from at most this many of a
/// partition's newest batches. A producer with no batch among them is taken
/// for a new one (accepted at any sequence), as Kafka does once a producer's
/// state has expired.
const PRODUCER_REBUILD_BATCHES_MAX: u64 = 1 << 16;

/// A producer-state snapshot is due once this many batches were appended
/// since the last one: an open replays at most about this many (plus what
/// came after the last checkpoint) to rebuild producer state.
const SNAPSHOT_EVERY_BATCHES: u64 = 1 << 13;

/// Everything about a partition that changes, behind one lock.
pub(crate) struct PartitionState {
    id: PartitionId,
    config: PartitionConfig,
    /// The epoch this replica leads (or last learned) the partition in:
    /// one cell shared with [`PartitionInner::leader_epoch`], written only
    /// under the state lock and read without it.
    leader_epoch: Arc<AtomicI32>,
    /// Leader epochs and their start offsets (`epochs.rs`).
    epochs: crate::epochs::EpochCache,
    /// The queue index: batches in offset order, the newest in memory.
    index: QueueIndex,
    /// Base offset of the last batch appended since the process started
    /// with the index's [`DELAY_MARK`], or -1: tells the delay mover which
    /// partitions have new delayed records without reading their indexes.
    last_delay_mark: i64,
    log_start: i64,
    /// The log-start offset the last durable checkpoint recorded: a restart
    /// starts from it, whatever the in-memory `log_start` says, so segment
    /// deletion keeps what lies between the two.
    checkpointed_log_start: i64,
    /// Offset after the last appended batch, durable or not.
    log_end: i64,
    /// Offset after the last batch consumers may read and `acks=all`
    /// waits for. Set only through [`Self::set_hw`]. It follows durability
    /// (or the log end under a relaxed flush policy), never past `hw_bound`.
    hw: i64,
    /// Watched by [`crate::CommitWait`]; carries `hw` and the truncations.
    hw_tx: tokio::sync::watch::Sender<crate::Committed>,
    /// Offset after the last batch known to be fdatasync'd.
    durable_end: i64,
    /// The offset the high watermark may not pass, set by replication: on
    /// a leader the lowest durable end its in-sync followers confirmed, on
    /// a follower the leader's high watermark. `None` on a single node,
    /// where the high watermark follows durability alone.
    hw_bound: Option<i64>,
    producers: ProducerTable,
    /// The partition's aborted transactions (`aborted.rs`).
    aborted: AbortedIndex,
    /// Transactions whose marker is at or past the high watermark, as
    /// (first offset, producer id, marker offset): they stay unstable (they
    /// hold the last stable offset back) until the high watermark passes
    /// their marker, as in Kafka.
    completing: BTreeSet<(i64, i64, i64)>,
    /// The data directory, where the producer-state snapshots live.
    dir: Arc<std::path::Path>,
    /// Offsets of this partition's producer-state snapshots on disk.
    snapshots: BTreeSet<i64>,
    /// The index's next slot when producer state was last snapshotted (or
    /// rebuilt from the newest snapshot).
    snapshot_slot: u64,
    /// Markers recovery's tail scan re-indexed, by offset, until producer
    /// state is rebuilt at the end of recovery.
    tail_markers: HashMap<i64, TxnMarker>,
    removed: bool,
    /// A truncation is between writing its log entry and cutting the index
    /// file: appends are refused until it is done.
    truncating: bool,
    /// `delete.retention.ms`: how long compaction keeps a tombstone; `None`
    /// keeps tombstones forever.
    delete_retention_ms: Option<i64>,
    /// Offset up to which the last compaction built its key map: batches
    /// from here on are the "dirty" part that decides when to compact again.
    compacted_end: i64,
    /// Earliest time (ms) at which a tombstone kept by the last compaction
    /// may be removed; `i64::MAX` when none is waiting.
    tombstone_due_ms: i64,
}

impl PartitionState {
    pub fn config(&self) -> &PartitionConfig {
        &self.config
    }

    /// The epoch this replica leads (or last learned) the partition in.
    pub fn leader_epoch(&self) -> i32 {
        self.leader_epoch.load(Ordering::SeqCst)
    }

    pub fn epochs(&self) -> &crate::epochs::EpochCache {
        &self.epochs
    }

    pub fn index(&self) -> &QueueIndex {
        &self.index
    }

    pub fn log_start(&self) -> i64 {
        self.log_start
    }

    pub fn log_end(&self) -> i64 {
        self.log_end
    }

    pub fn last_delay_mark(&self) -> i64 {
        self.last_delay_mark
    }

    pub fn hw(&self) -> i64 {
        self.hw
    }

    pub fn durable_end(&self) -> i64 {
        self.durable_end
    }

    pub fn removed(&self) -> bool {
        self.removed
    }

    pub fn delete_retention_ms(&self) -> Option<i64> {
        self.delete_retention_ms
    }

    pub fn compacted_end(&self) -> i64 {
        self.compacted_end
    }

    pub fn tombstone_due_ms(&self) -> i64 {
        self.tombstone_due_ms
    }

    /// A new partition's state, in the data directory `dir`.
    pub fn new(id: PartitionId, dir: &std::path::Path, config: PartitionConfig) -> Self {
        let path = crate::recovery::index_path(&dir.join("index"), id);
        PartitionState {
            id,
            config,
            leader_epoch: Arc::new(AtomicI32::new(0)),
            epochs: Default::default(),
            index: QueueIndex::new(path),
            last_delay_mark: -1,
            log_start: 0,
            checkpointed_log_start: i64::MIN,
            log_end: 0,
            hw: 0,
            hw_tx: tokio::sync::watch::Sender::new(crate::Committed::default()),
            durable_end: 0,
            hw_bound: None,
            producers: ProducerTable::default(),
            aborted: AbortedIndex::new(crate::aborted::txn_index_path(dir, id), id),
            completing: BTreeSet::new(),
            dir: Arc::from(dir),
            snapshots: BTreeSet::new(),
            snapshot_slot: 0,
            tail_markers: HashMap::new(),
            removed: false,
            truncating: false,
            delete_retention_ms: Some(crate::compaction::DELETE_RETENTION_MS_DEFAULT),
            compacted_end: i64::MIN,
            tombstone_due_ms: i64::MAX,
        }
    }

    /// The queue index, for maintenance and recovery, which move and
    /// rewrite batches (the index keeps its own invariants); the offsets
    /// stay behind this type's methods.
    pub fn index_mut(&mut self) -> &mut QueueIndex {
        &mut self.index
    }

    /// Recovery loaded the index file: the batches it holds start at
    /// `log_start`.
    pub fn load_index(&mut self, index: QueueIndex, log_start: i64) {
        self.index = index;
        self.log_start = log_start;
    }

    /// Recovery found the log to reach `end` (before its tail scan).
    pub fn set_recovered_end(&mut self, end: i64) {
        self.log_end = end;
    }

    /// Recovery opened the aborted transactions and found the snapshots
    /// it may use (those at or below what the checkpoint vouched for).
    pub fn load_transactions(&mut self, aborted: AbortedIndex, snapshots: BTreeSet<i64>) {
        self.aborted = aborted;
        self.snapshots = snapshots;
    }

    /// Recovery's tail scan re-indexed a control batch at `offset`.
    pub fn note_tail_marker(&mut self, offset: i64, marker: Option<TxnMarker>) {
        if let Some(m) = marker {
            self.tail_markers.insert(offset, m);
        }
    }

    /// Recovery's tail scan met a batch past the log end: index it.
    pub fn replay_batch(
        &mut self,
        entry: IndexEntry,
        segment: u64,
        hot_max: usize,
        ix: IndexIo<'_>,
    ) -> Result<(), StorageError> {
        self.log_end = entry.last_offset() + 1;
        self.index.push(entry, segment, hot_max, ix).map(|_| ())
    }

    /// Recovery is done: forget the uses of segments below the first one
    /// left (`first_base`), whose batches lie below the log start; everything
    /// recovered is durable, and readable.
    pub fn finish_recovery(
        &mut self,
        first_base: u64,
        ix: IndexIo<'_>,
    ) -> Result<(), StorageError> {
        // A segment is deleted only once nothing in it is live, so a use of
        // one below the first segment is of batches below the log start.
        let gone: Vec<u64> = self
            .index
            .segment_uses()
            .range(..first_base)
            .map(|(b, _)| *b)
            .collect();
        let dead_end = self
            .index
            .segment_uses()
            .range(..first_base)
            .map(|(_, u)| u.max_last_offset.saturating_add(1))
            .max();
        self.index.forget_segments(&gone);
        self.log_end = self.log_end.max(self.log_start);
        self.set_hw(self.log_end);
        if let Some(end) = dead_end {
            self.advance_log_start(end, ix)?;
        }
        self.durable_end = self.log_end;
        let rebuilt = self.rebuild_producers(ix);
        self.tail_markers = HashMap::new();
        rebuilt
    }

    /// Replace the config; `true` when the high watermark moved (a relaxed
    /// flush policy makes everything written readable at once).
    pub fn set_config(&mut self, config: PartitionConfig) -> bool {
        self.config = config;
        self.advance_hw()
    }

    pub fn set_delete_retention_ms(&mut self, ms: Option<i64>) {
        self.delete_retention_ms = ms;
    }

    /// The partition is no longer registered: refuse appends.
    pub fn mark_removed(&mut self) {
        self.removed = true;
    }

    /// A compaction built its key map up to `map_end`; the next tombstone it
    /// kept may go at `tombstone_due_ms`.
    pub fn compaction_done(&mut self, map_end: i64, tombstone_due_ms: i64) {
        self.compacted_end = map_end;
        self.tombstone_due_ms = tombstone_due_ms;
    }

    /// A compaction installed a rewritten index (its file already renamed
    /// into place).
    pub fn install_index(&mut self, index: QueueIndex) {
        self.index = index;
    }

    /// Hand the epoch cache over (recovery merges it with the stored one).
    pub fn take_epochs(&mut self) -> crate::epochs::EpochCache {
        std::mem::take(&mut self.epochs)
    }

    /// Set the leader epoch and the epoch cache together (recovery).
    pub fn set_epochs(&mut self, leader_epoch: i32, cache: crate::epochs::EpochCache) {
        self.leader_epoch.store(leader_epoch, Ordering::SeqCst);
        self.epochs = cache;
    }

    /// Learn that `epoch` starts at `base_offset` if it is above every
    /// known epoch; `true` when the cache changed.
    pub fn learn_epoch(&mut self, epoch: i32, base_offset: i64) -> bool {
        self.epochs.learn(epoch, base_offset)
    }

    /// Lead in `epoch` from the log end on; `true` when anything changed.
    /// The caller checked that `epoch` is not below the current one.
    pub fn start_epoch(&mut self, epoch: i32) -> bool {
        let assigned = self.epochs.assign(epoch, self.log_end);
        if !assigned && epoch == self.leader_epoch() {
            return false;
        }
        self.leader_epoch.store(epoch, Ordering::SeqCst);
        true
    }

    /// Where the high watermark may go now: the durable end (the log end
    /// under a relaxed flush policy, which exposes appends before their
    /// fsync), never past the replication bound.
    fn hw_target(&self) -> i64 {
        let local = if self.config.flush_messages > 1 {
            self.log_end
        } else {
            self.durable_end
        };
        self.hw_bound.map_or(local, |bound| local.min(bound))
    }

    /// Move the high watermark up to [`Self::hw_target`], never back (only
    /// a truncation lowers it); `true` when it moved.
    pub fn advance_hw(&mut self) -> bool {
        let target = self.hw_target();
        if target <= self.hw {
            return false;
        }
        self.set_hw(target);
        true
    }

    /// Set the replication bound on the high watermark (`None`: none) and
    /// move the high watermark up to what it allows; `true` when it moved.
    pub fn set_hw_bound(&mut self, bound: Option<i64>) -> bool {
        self.hw_bound = bound;
        self.advance_hw()
    }

    /// Move the high watermark (and wake whoever waits on it).
    pub fn set_hw(&mut self, hw: i64) {
        self.hw = hw;
        self.hw_tx.send_modify(|c| c.hw = hw);
        if self.completing.first().is_some() {
            self.completing.retain(|(_, _, marker)| *marker >= hw);
        }
    }

    /// The last stable offset: the high watermark, held back to the first
    /// offset of the earliest transaction that is open, or whose marker
    /// the high watermark has not passed yet. read_committed consumers read
    /// below it.
    pub fn last_stable(&self) -> i64 {
        let mut lso = self.hw;
        if let Some(first) = self.producers.first_open_offset() {
            lso = lso.min(first);
        }
        if let Some((first, _, _)) = self.completing.first() {
            lso = lso.min(*first);
        }
        lso.max(self.log_start)
    }

    pub fn offsets(&self) -> PartitionOffsets {
        PartitionOffsets {
            log_start: self.log_start,
            high_watermark: self.hw,
            last_stable: self.last_stable(),
            log_end: self.log_end,
        }
    }

    /// What each producer's state says (DescribeProducers).
    pub fn producers(&self) -> &ProducerTable {
        &self.producers
    }

    /// The aborted transactions a read of `[start, upper)` must name.
    pub fn aborted_in(
        &self,
        start: i64,
        upper: i64,
        ix: IndexIo<'_>,
    ) -> Result<Vec<AbortedTxn>, StorageError> {
        self.aborted.collect(start, upper, ix)
    }

    /// A durable checkpoint recorded `log_start`: batches below it are dead
    /// after a restart too, and their segments may go.
    pub fn recorded_log_start(&mut self, log_start: i64) {
        self.checkpointed_log_start = self.checkpointed_log_start.max(log_start);
    }

    /// The log start one step ([`LOG_START_STEP_ENTRIES`] batches) toward
    /// `target`: `target` itself when it is that near.
    pub fn log_start_step(&self, target: i64, ix: IndexIo<'_>) -> Result<i64, StorageError> {
        let slot = self
            .index
            .first_slot()
            .saturating_add(LOG_START_STEP_ENTRIES);
        if slot >= self.index.next_slot() {
            return Ok(target);
        }
        Ok(target.min(self.index.get(slot, ix)?.base_offset))
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

    /// Start afresh at `offset`, at or past the log end (the caller checked):
    /// every batch lies below it and is forgotten, and the log start, log
    /// end, durable end and high watermark all become `offset`. Producer
    /// state is forgotten too, so an unknown producer is accepted at any
    /// sequence. The epoch cache is left to [`Self::trim_epochs_to_start`],
    /// once the move is durable.
    pub fn start_at(&mut self, offset: i64, ix: IndexIo<'_>) -> Result<(), StorageError> {
        debug_assert!(
            offset >= self.log_end,
            "start_at {offset} below the log end"
        );
        self.log_start = offset;
        self.log_end = offset;
        self.durable_end = offset;
        self.set_hw(offset);
        self.index.trim(offset, ix)?;
        self.producers = ProducerTable::incomplete();
        self.completing.clear();
        self.aborted.clear(ix)?;
        self.remove_snapshots_past(i64::MIN, ix)?;
        self.snapshot_slot = self.index.next_slot();
        Ok(())
    }

    /// Trim the epoch cache to the log start, keeping the partition's own
    /// epoch, as recovery's `epochs::attach` does; `true` when it changed.
    pub fn trim_epochs_to_start(&mut self) -> bool {
        let mut changed = self.epochs.truncate_from_start(self.log_start);
        if self
            .epochs
            .latest()
            .is_none_or(|l| l.epoch < self.leader_epoch())
        {
            changed |= self.epochs.assign(self.leader_epoch(), self.log_end);
        }
        changed
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
        self.hw = hw;
        // Waiters for batches past the new end fail rather than be answered
        // by the high watermark passing their offsets over other batches.
        self.hw_tx.send_modify(|c| {
            c.hw = hw;
            c.truncations += 1;
            c.truncated_to = new_end;
        });
        self.compacted_end = self.compacted_end.min(new_end);
        self.aborted.truncate(new_end, ix)?;
        self.tail_markers.retain(|offset, _| *offset < new_end);
        self.remove_snapshots_past(new_end, ix)?;
        self.epochs.truncate_from_end(new_end);
        // The partition's own epoch stays, starting at the new end (as
        // recovery's `epochs::attach` has it).
        if self
            .epochs
            .latest()
            .is_none_or(|l| l.epoch < self.leader_epoch())
        {
            self.epochs.assign(self.leader_epoch(), new_end);
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

    /// Rebuild producer state: from the newest snapshot (one at or below
    /// the log end: a truncation removed the later ones) and the batches
    /// after it; with no usable snapshot, from the newest
    /// [`PRODUCER_REBUILD_BATCHES_MAX`] batches, forgetting producers that
    /// wrote only before them. Markers re-indexed by recovery's tail scan
    /// that abort a transaction are written to the aborted transactions.
    pub fn rebuild_producers(&mut self, ix: IndexIo<'_>) -> Result<(), StorageError> {
        let to = self.index.next_slot();
        let mut base = None;
        for &offset in self.snapshots.range(..=self.log_end).rev() {
            if let Some(table) = crate::snapshots::read(&self.dir, self.id, offset, ix.io)? {
                base = Some((table, offset));
                break;
            }
        }
        let (mut table, from) = match base {
            Some((table, offset)) => {
                let from = self.index.find_from(offset, ix)?.unwrap_or(to);
                (table, from.max(self.index.first_slot()))
            }
            None => {
                let from = to
                    .saturating_sub(PRODUCER_REBUILD_BATCHES_MAX)
                    .max(self.index.first_slot());
                // Producers whose batches are all below the log start, or
                // older than the newest batches read, are forgotten.
                let table = if from == 0 && self.log_start == 0 {
                    ProducerTable::default()
                } else {
                    ProducerTable::incomplete()
                };
                (table, from)
            }
        };
        let filed_up_to = self.aborted.last_marker().unwrap_or(i64::MIN);
        let mut to_file = Vec::new();
        self.index.scan(from, to, ix, |_, e| {
            if e.producer_id < 0 || e.last_offset() < self.log_start {
                return ControlFlow::Continue(());
            }
            let mut state = table.get(e.producer_id).cloned().unwrap_or_default();
            if e.attributes & crate::RecordBatchHeader::CONTROL != 0 {
                let marker = self.tail_markers.get(&e.base_offset).copied();
                let began =
                    state.record_marker(e.producer_epoch, marker.map(|m| m.coordinator_epoch));
                table.put(e.producer_id, state);
                // An abort only recovery's tail scan saw is not filed yet.
                if let (Some(first), Some(m)) = (began, marker)
                    && !m.commit
                    && e.base_offset > filed_up_to
                {
                    to_file.push(AbortedTxn {
                        producer_id: e.producer_id,
                        first_offset: first,
                        last_offset: e.base_offset,
                        last_stable_offset: table.first_open_offset().unwrap_or(e.base_offset + 1),
                    });
                }
            } else if e.base_sequence < 0 {
                state.record_unsequenced(
                    e.producer_epoch,
                    e.base_offset,
                    e.attributes & crate::RecordBatchHeader::TRANSACTIONAL != 0,
                    e.max_timestamp,
                );
                table.put(e.producer_id, state);
            } else {
                state.record(
                    e.producer_epoch,
                    SequencedBatch {
                        first_seq: e.base_sequence,
                        last_seq: batch::increment_sequence(e.base_sequence, e.last_offset_delta),
                        base_offset: e.base_offset,
                        last_offset: e.last_offset(),
                    },
                    e.attributes & crate::RecordBatchHeader::TRANSACTIONAL != 0,
                    e.max_timestamp,
                );
                table.put(e.producer_id, state);
            }
            ControlFlow::Continue(())
        })?;
        for entry in to_file {
            self.aborted.append(entry, ix)?;
        }
        self.producers = table;
        self.completing.clear();
        self.snapshot_slot = from;
        Ok(())
    }

    /// Remove the producer-state snapshots past `offset` (a truncation cut
    /// the batches they cover), durably: a later checkpoint could
    /// otherwise vouch for their offsets again and an open trust them.
    fn remove_snapshots_past(&mut self, offset: i64, ix: IndexIo<'_>) -> Result<(), StorageError> {
        let past: Vec<i64> = self
            .snapshots
            .range(offset.saturating_add(1)..)
            .copied()
            .collect();
        if past.is_empty() {
            return Ok(());
        }
        for at in past {
            crate::snapshots::remove(ix.io, &crate::snapshots::path(&self.dir, self.id, at))?;
            self.snapshots.remove(&at);
        }
        crate::snapshots::sync_folder(&self.dir, ix.io)
    }

    /// A producer-state snapshot to write now, at the log end, as (offset,
    /// bytes): when enough batches came since the last one, when the log
    /// start passed the newest one (a restart would otherwise forget the
    /// producers that wrote only below it), or, at shutdown (`closing`),
    /// when batches came since and there is producer state to keep.
    /// Recorded as taken; the caller writes it before the checkpoint.
    pub fn take_snapshot(&mut self, closing: bool) -> Option<(i64, Vec<u8>)> {
        let since = self.index.next_slot().saturating_sub(self.snapshot_slot);
        let newest = self.snapshots.last().copied();
        let has_producers = self.producers.len() > 0;
        let passed = has_producers && newest.unwrap_or(0) < self.log_start;
        let due = since >= SNAPSHOT_EVERY_BATCHES
            || passed
            || (closing && since > 0 && (has_producers || newest.is_some()));
        if !due || newest == Some(self.log_end) {
            return None;
        }
        let at = self.log_end;
        self.snapshots.insert(at);
        self.snapshot_slot = self.index.next_slot();
        Some((at, self.producers.encode(self.id, at)))
    }

    /// Whether the snapshot at `at` is still wanted: it was not removed by
    /// a truncation, a fresh start or the partition's removal since it was
    /// taken.
    pub fn has_snapshot(&self, at: i64) -> bool {
        !self.removed && self.snapshots.contains(&at)
    }

    /// A checkpoint vouched for everything below `vouched_end`: the
    /// snapshots older than the newest one at or below it are no longer
    /// needed. Returns their paths, for the caller to remove.
    pub fn superseded_snapshots(&mut self, vouched_end: i64) -> Vec<std::path::PathBuf> {
        let Some(&trusted) = self.snapshots.range(..=vouched_end).next_back() else {
            return Vec::new();
        };
        let old: Vec<i64> = self.snapshots.range(..trusted).copied().collect();
        old.into_iter()
            .map(|at| {
                self.snapshots.remove(&at);
                crate::snapshots::path(&self.dir, self.id, at)
            })
            .collect()
    }

    /// The partition is being removed: remove its aborted transactions and
    /// snapshots too.
    pub fn remove_files(&mut self, ix: IndexIo<'_>) -> Result<(), StorageError> {
        self.aborted.remove(ix)?;
        self.remove_snapshots_past(i64::MIN, ix)
    }

    /// An append may go ahead: the partition is registered and not in the
    /// middle of a truncation.
    fn check_writable(&self, id: PartitionId) -> Result<(), AppendError> {
        if self.removed {
            return Err(AppendError::Storage(removed_error(id)));
        }
        if self.truncating {
            return Err(AppendError::Truncating);
        }
        Ok(())
    }

    /// Write the index entries only memory holds to the index file (no
    /// fsync); a failure poisons the store.
    pub fn flush_index(&mut self, store: &Store) -> Result<(), StorageError> {
        match self.index.flush(store.index_io()) {
            Ok(()) => Ok(()),
            Err(e) => Err(store.poison(e.to_string())),
        }
    }
}

/// Index entries a log-start move reads under the partition's lock at a
/// time (1 MiB of index): a DeleteRecords or retention run over a long
/// backlog moves the log start in steps, letting appends and reads of the
/// partition in between, rather than hold the lock across the whole scan.
pub(crate) const LOG_START_STEP_ENTRIES: u64 = 1 << 14;

/// A partition's identity and state.
pub(crate) struct PartitionInner {
    pub id: PartitionId,
    pub state: Mutex<PartitionState>,
    /// The state's leader epoch, readable without the state lock: Metadata
    /// and Fetch read it on the async runtime, where waiting behind an
    /// append's write would stall a worker thread.
    leader_epoch: Arc<AtomicI32>,
}

impl PartitionInner {
    pub fn new(id: PartitionId, state: PartitionState) -> Self {
        Self {
            id,
            leader_epoch: state.leader_epoch.clone(),
            state: Mutex::new(state),
        }
    }

    /// The partition's leader epoch, without the state lock.
    pub fn leader_epoch(&self) -> i32 {
        self.leader_epoch.load(Ordering::SeqCst)
    }

    /// The flusher made everything up to `end_offset` durable. Returns whether
    /// the durable end or the high watermark moved: a follower's fetch
    /// waits for the durable end, which it reads up to, even while the
    /// high watermark waits for the followers.
    pub fn mark_durable(&self, end_offset: i64) -> Result<bool, StorageError> {
        let mut st = lock(&self.state)?;
        let durable_end = st.durable_end.max(end_offset.min(st.log_end));
        let durable_moved = durable_end != st.durable_end;
        st.durable_end = durable_end;
        let hw_moved = st.advance_hw();
        Ok(durable_moved || hw_moved)
    }
}

/// Remove every batch from the one holding `offset` on, durably
/// ([`crate::Partition::truncate_to`]). Returns the new log end.
pub(crate) fn truncate_to(
    store: &Store,
    part: &PartitionInner,
    offset: i64,
) -> Result<i64, TruncateError> {
    let _panic = store.panic_guard("a truncation");
    // No compaction or cleaner moves index entries meanwhile.
    let _one_run = lock(&store.maintenance_lock)?;
    let ix = store.index_io();
    let cut = {
        let mut st = lock(&part.state)?;
        if st.removed() {
            return Err(removed_error(part.id).into());
        }
        if offset < st.log_start() {
            return Err(TruncateError::BelowLogStart {
                offset,
                log_start: st.log_start(),
            });
        }
        if offset >= st.log_end() {
            return Ok(st.log_end());
        }
        let cut = match st.truncate(offset, false, ix) {
            Ok(cut) => cut,
            Err(e) => {
                drop(st);
                return Err(store.poison(e.to_string()).into());
            }
        };
        // The entry names the end the truncation left (the base offset of
        // the batch that held `offset`), so replaying it over an index
        // that already lost those batches lands on the same end. From here
        // a checkpoint vouches for nothing at or past it, so it never needs
        // the entry; the index file keeps its old entries until the entry
        // is durable.
        let mut entry = Vec::with_capacity(format::ENTRY_HEADER_BYTES);
        format::put_entry(
            &mut entry,
            format::EntryKind::Truncation,
            part.id,
            st.log_end(),
            &[],
        );
        store.log.write_entries(&entry, None)?;
        // The leader-epoch file loses the epochs past the end at the next
        // checkpoint; recovery replays the entry over a stale file too.
        store.leader_epochs.mark_dirty();
        st.truncating = true;
        cut
    };
    let synced = store.log.sync_now();
    let mut st = lock(&part.state)?;
    st.truncating = false;
    synced?;
    if let Some(slot) = cut
        && let Err(e) = st.index.truncate_file(slot, ix)
    {
        drop(st);
        return Err(store.poison(e.to_string()).into());
    }
    store.mark_checkpoint_dirty();
    let end = st.log_end();
    drop(st);
    store.bump_progress();
    Ok(end)
}

/// Validate, sequence-check, patch and append one produce payload.
pub(crate) fn append(
    store: &Store,
    part: &Arc<PartitionInner>,
    payload: Bytes,
) -> Result<AppendOutcome, AppendError> {
    let _panic = store.panic_guard("an append");
    let summaries = summarize_payload(&payload, lock(&part.state)?.config.tag_summaries);
    let mut st = lock(&part.state)?;
    let mut out = Vec::with_capacity(payload.len() + ENTRY_HEADER_BYTES);
    match prepare(store, part.id, &st, (&payload, &summaries), &mut out)? {
        Prepare::Duplicate(outcome) => Ok(outcome),
        Prepare::Write(p) => {
            let written = store
                .log
                .write_entries(&out, Some(marker(part, &st, p.end_offset)))?;
            commit(store, &mut st, p, written)
        }
    }
}

/// Append one payload to each of several partitions with a single write to
/// the store. Each partition is locked (in id order, so concurrent callers
/// cannot deadlock) from the offset assignment until its entries are written,
/// so entries of one partition reach the log in offset order. Results come
/// back in the order of `items`.
pub(crate) fn append_many(
    store: &Store,
    items: &[(Arc<PartitionInner>, Bytes, Option<&Summaries>)],
) -> Vec<Result<AppendOutcome, AppendError>> {
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.sort_by_key(|&i| items.get(i).map(|(p, _, _)| p.id));
    let ids = |i: &usize| items.get(*i).map(|(p, _, _)| p.id);
    if order.windows(2).any(|w| ids(&w[0]) == ids(&w[1])) {
        // A partition named twice would be locked twice: append one by one.
        return items
            .iter()
            .map(|(part, payload, _)| append(store, part, payload.clone()))
            .collect();
    }
    let _panic = store.panic_guard("an append");
    let mut results: Vec<Option<Result<AppendOutcome, AppendError>>> =
        items.iter().map(|_| None).collect();
    // Before any partition is locked (a partition that cannot be locked
    // fails below).
    let computed: Vec<Option<Summaries>> = items
        .iter()
        .map(|(part, payload, given)| match (given, lock(&part.state)) {
            (Some(_), _) | (None, Err(_)) => None,
            (None, Ok(st)) => {
                let tags = st.config.tag_summaries;
                drop(st);
                Some(summarize_payload(payload, tags))
            }
        })
        .collect();
    let no_summaries = Summaries::default();
    let mut guards = Vec::with_capacity(items.len());
    for (i, (part, payload, given)) in order.iter().filter_map(|&i| Some((i, items.get(i)?))) {
        match lock(&part.state) {
            Ok(st) => {
                let summaries = given
                    .or_else(|| computed.get(i).and_then(Option::as_ref))
                    .unwrap_or(&no_summaries);
                guards.push((i, part, (payload, summaries), st));
            }
            Err(e) => {
                if let Some(slot) = results.get_mut(i) {
                    *slot = Some(Err(e.into()));
                }
            }
        }
    }
    let total: usize = items
        .iter()
        .map(|(_, payload, _)| payload.len() + ENTRY_HEADER_BYTES)
        .sum();
    let mut out = Vec::with_capacity(total);
    let mut prepared = Vec::new();
    let mut markers = Vec::new();
    for (g, (i, part, payload, st)) in guards.iter().enumerate() {
        let result = match prepare(store, part.id, st, *payload, &mut out) {
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
        let written = store.log.write_entries_marked(&out, markers);
        for (g, p) in prepared {
            let Some((i, _, _, st)) = guards.get_mut(g) else {
                continue;
            };
            let result = match &written {
                Ok(written) => commit(store, st, p, *written),
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
    store: &Store,
    part: &Arc<PartitionInner>,
    payload: Bytes,
) -> Result<AppendOutcome, AppendError> {
    let _panic = store.panic_guard("a replica append");
    let summaries = summarize_payload(&payload, lock(&part.state)?.config.tag_summaries);
    let mut st = lock(&part.state)?;
    st.check_writable(part.id)?;
    let infos = batch::parse_replica_payload(&payload)?;
    let mut out = Vec::with_capacity(payload.len() + infos.len() * ENTRY_HEADER_BYTES);
    let mut entries = Vec::with_capacity(infos.len());
    let mut producers: HashMap<i64, ProducerState> = HashMap::new();
    let mut completed = Vec::new();
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
        let summary = summaries.get(info.start, src, st.config.tag_summaries);
        entries.push((at, index_entry(info, base, summary)));
        let last = base + i64::from(info.last_offset_delta);
        if info.producer_id >= 0 {
            let state = producers.entry(info.producer_id).or_insert_with(|| {
                st.producers
                    .get(info.producer_id)
                    .cloned()
                    .unwrap_or_default()
            });
            if info.is_control() {
                let txn = batch::control_marker(src).ok_or(AppendError::InvalidBatch(
                    "a control batch that holds no transaction marker",
                ))?;
                if let Some(first) =
                    state.record_marker(info.producer_epoch, Some(txn.coordinator_epoch))
                {
                    completed.push(CompletedTxn {
                        producer_id: info.producer_id,
                        first_offset: first,
                        marker_offset: base,
                        commit: txn.commit,
                        last_stable: first_open(&st.producers, &producers).unwrap_or(base + 1),
                    });
                }
            } else if info.base_sequence < 0 {
                state.record_unsequenced(
                    info.producer_epoch,
                    base,
                    info.is_transactional(),
                    info.max_timestamp,
                );
            } else {
                state.record(
                    info.producer_epoch,
                    SequencedBatch {
                        first_seq: info.base_sequence,
                        last_seq: info.last_sequence(),
                        base_offset: base,
                        last_offset: last,
                    },
                    info.is_transactional(),
                    info.max_timestamp,
                );
            }
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
        completed,
    };
    let written = store
        .log
        .write_entries(&out, Some(marker(part, &st, next)))?;
    commit(store, &mut st, prepared, written)
}

/// Append a transaction marker (a control batch) for `producer_id` at
/// `producer_epoch`: the producer's open transaction here ends, committed
/// or aborted. A marker from an older producer epoch is refused
/// (INVALID_PRODUCER_EPOCH), and so is one from an older coordinator than
/// the producer's last marker (TRANSACTION_COORDINATOR_FENCED).
pub(crate) fn append_marker(
    store: &Store,
    part: &Arc<PartitionInner>,
    producer_id: i64,
    producer_epoch: i16,
    txn: TxnMarker,
) -> Result<AppendOutcome, AppendError> {
    let _panic = store.panic_guard("a marker append");
    let mut st = lock(&part.state)?;
    st.check_writable(part.id)?;
    let current = st.producers.get(producer_id);
    ProducerState::check_marker(current, producer_id, producer_epoch, txn.coordinator_epoch)?;
    let control = batch::control_batch(producer_id, producer_epoch, txn, store.log.clock.now_ms())?;
    let info = batch::parse_replica_payload(&control)?
        .into_iter()
        .next()
        .ok_or(AppendError::InvalidBatch("an empty transaction marker"))?;
    let offset = st.log_end;
    let leader_epoch = st.leader_epoch();
    let mut out = Vec::with_capacity(control.len() + ENTRY_HEADER_BYTES);
    format::put_patched_entry(&mut out, EntryKind::Batch, part.id, offset, &control, |b| {
        batch::patch_offsets(b, offset, leader_epoch);
    });
    let mut state = current.cloned().unwrap_or_default();
    let began = state.record_marker(producer_epoch, Some(txn.coordinator_epoch));
    let end_offset = offset + i64::from(info.last_offset_delta) + 1;
    let producers = HashMap::from([(producer_id, state)]);
    let last_stable = first_open(&st.producers, &producers).unwrap_or(end_offset);
    let prepared = Prepared {
        entries: vec![(0, index_entry(&info, offset, RecordsSummary::NONE))],
        buf_end: out.len() as u64,
        producers,
        base_offset: offset,
        end_offset,
        log_append_time: -1,
        gaps_allowed: false,
        epochs: Vec::new(),
        completed: began
            .map(|first| CompletedTxn {
                producer_id,
                first_offset: first,
                marker_offset: offset,
                commit: txn.commit,
                last_stable,
            })
            .into_iter()
            .collect(),
    };
    let written = store
        .log
        .write_entries(&out, Some(marker(part, &st, end_offset)))?;
    commit(store, &mut st, prepared, written)
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
    /// Transactions the payload's markers end.
    completed: Vec<CompletedTxn>,
}

/// A transaction a marker ended in this partition.
#[derive(Debug, Clone, Copy)]
struct CompletedTxn {
    producer_id: i64,
    first_offset: i64,
    marker_offset: i64,
    commit: bool,
    /// The last stable offset once the marker is written: the first offset
    /// of the earliest transaction still open after it.
    last_stable: i64,
}

/// The first offset of the earliest open transaction, with the producers
/// of a payload being appended (`scratch`) in their new state.
fn first_open(table: &ProducerTable, scratch: &HashMap<i64, ProducerState>) -> Option<i64> {
    let kept = table
        .open_transactions()
        .find(|(_, producer_id)| !scratch.contains_key(producer_id))
        .map(|(first, _)| first);
    let changed = scratch.values().filter_map(|s| s.txn_first_offset()).min();
    kept.into_iter().chain(changed).min()
}

/// What an append tells the flusher about its partition.
fn marker(part: &Arc<PartitionInner>, st: &PartitionState, end_offset: i64) -> MarkerUpdate {
    MarkerUpdate {
        stream: part.id,
        end_offset,
        flush_messages: st.config.flush_messages,
        flush_ms: st.config.flush_ms,
    }
}

/// Validate and sequence-check a payload, then encode its entries (broker
/// fields patched) at the end of `out`. Changes nothing in the partition.
fn prepare(
    store: &Store,
    id: PartitionId,
    st: &PartitionState,
    (payload, summaries): (&Bytes, &Summaries),
    out: &mut Vec<u8>,
) -> Result<Prepare, AppendError> {
    st.check_writable(id)?;
    let infos = batch::parse_payload(payload, st.config.max_message_bytes)?;
    let now_ms = store.log.clock.now_ms();

    // Sequence checks, against a scratch copy so a refused payload changes nothing.
    let mut scratch: HashMap<i64, ProducerState> = HashMap::new();
    let mut duplicates = Vec::new();
    let mut next = st.log_end;
    for info in &infos {
        let count = i64::from(info.last_offset_delta) + 1;
        if info.producer_id < 0 && info.is_transactional() {
            ProducerState::check_txn(None, info.producer_id, info.producer_epoch, true)?;
        }
        if info.producer_id >= 0 && info.base_sequence < 0 {
            // No sequence (a coordinator's write for a producer, as Kafka's
            // group coordinator writes TxnOffsetCommit): only the
            // transaction rules apply.
            let state = scratch
                .get(&info.producer_id)
                .or_else(|| st.producers.get(info.producer_id));
            ProducerState::check_txn(
                state,
                info.producer_id,
                info.producer_epoch,
                info.is_transactional(),
            )?;
            let mut s = state.cloned().unwrap_or_default();
            s.record_unsequenced(
                info.producer_epoch,
                next,
                info.is_transactional(),
                info.max_timestamp,
            );
            scratch.insert(info.producer_id, s);
        } else if info.producer_id >= 0 {
            let state = scratch
                .get(&info.producer_id)
                .or_else(|| st.producers.get(info.producer_id));
            let check = ProducerState::check(
                state,
                st.producers.complete(),
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
                    ProducerState::check_txn(
                        state,
                        info.producer_id,
                        info.producer_epoch,
                        info.is_transactional(),
                    )?;
                    let mut s = state.cloned().unwrap_or_default();
                    s.record(
                        info.producer_epoch,
                        SequencedBatch {
                            first_seq: info.base_sequence,
                            last_seq: info.last_sequence(),
                            base_offset: next,
                            last_offset: next + count - 1,
                        },
                        info.is_transactional(),
                        info.max_timestamp,
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
        return Ok(Prepare::Duplicate(duplicate_outcome(
            store,
            st,
            &duplicates,
        )?));
    }

    // Build the entries: header + batch with broker-owned fields patched.
    let mut entries = Vec::with_capacity(infos.len());
    let mut offset = st.log_end;
    let leader_epoch = st.leader_epoch();
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
        let summary = summaries.get(info.start, src, st.config.tag_summaries);
        entries.push((position_in_buf, index_entry(&info, offset, summary)));
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
        completed: Vec::new(),
    }))
}

/// Record a written payload in the partition: index entries (in memory, and
/// buffered for the index file, which the checkpoint fsyncs), producer
/// state and log end. `written` says where the buffer's first byte went.
fn commit(
    store: &Store,
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
    store.check(follows, || {
        format!(
            "a batch's base offset {} is the log end {} of {:?}",
            p.base_offset,
            st.log_end,
            st.index.path()
        )
    })?;
    let start = written.position;
    let hot_max = store.index_hot_entries_max();
    let mut expected = p.base_offset;
    for (rel, mut e) in p.entries {
        e.position = start + rel;
        let inside = rel + (ENTRY_HEADER_BYTES as u64) + u64::from(e.size) <= p.buf_end;
        let in_order = if p.gaps_allowed {
            e.base_offset >= expected
        } else {
            e.base_offset == expected
        };
        store.check(in_order && inside, || {
            format!(
                "batch {} (expected {expected}) at position {} lies inside what was written",
                e.base_offset, e.position
            )
        })?;
        expected = e.last_offset() + 1;
        if e.attributes & DELAY_MARK != 0 {
            st.last_delay_mark = e.base_offset;
        }
        if let Err(e) = st.index.push(e, written.segment, hot_max, store.index_io()) {
            return Err(store.poison(e.to_string()).into());
        }
    }
    store.mark_checkpoint_dirty();
    for (id, s) in p.producers {
        st.producers.put(id, s);
    }
    for c in p.completed {
        if !c.commit {
            let entry = AbortedTxn {
                producer_id: c.producer_id,
                first_offset: c.first_offset,
                last_offset: c.marker_offset,
                last_stable_offset: c.last_stable,
            };
            match st.aborted.append(entry, store.index_io()) {
                Ok(made) => {
                    if made {
                        store.txn_dir_dirty.store(true, Ordering::SeqCst);
                    }
                }
                Err(e) => return Err(store.poison(e.to_string()).into()),
            }
        }
        if c.marker_offset >= st.hw {
            st.completing
                .insert((c.first_offset, c.producer_id, c.marker_offset));
        }
    }
    st.log_end = p.end_offset;
    if p.gaps_allowed {
        // A replica's batches carry the leader's epochs: learn each.
        // The log's epochs never go back: later leader appends stamp at
        // least the newest one (as recovery's rule has it).
        let mut learned = false;
        for (base, epoch) in &p.epochs {
            learned |= st.epochs.learn(*epoch, *base);
            st.leader_epoch.fetch_max(*epoch, Ordering::SeqCst);
        }
        if learned {
            store.leader_epochs.mark_dirty();
        }
    } else {
        crate::epochs::learn_appended(store, st, p.base_offset);
    }
    let strict = st.config.flush_messages <= 1;
    if !strict {
        st.advance_hw();
        store.bump_progress();
    }
    Ok(AppendOutcome {
        base_offset: p.base_offset,
        last_offset: p.end_offset - 1,
        log_append_time: p.log_append_time,
        log_start_offset: st.log_start,
        duplicate: false,
        durable: if strict {
            DurableWait::pending(store.log.durable_tx.subscribe(), start + p.buf_end)
        } else {
            DurableWait::ready()
        },
        committed: commit_wait(store, st, p.end_offset),
    })
}

/// A wait for `st`'s high watermark to reach `end_offset`.
fn commit_wait(store: &Store, st: &PartitionState, end_offset: i64) -> CommitWait {
    CommitWait::new(
        st.hw_tx.subscribe(),
        store.log.durable_tx.subscribe(),
        end_offset,
    )
}

/// The index entry of a batch about to be written at `base_offset`, with
/// its records' `summary` (computed from its bytes before the lock:
/// [`crate::summary`]).
fn index_entry(info: &BatchInfo, base_offset: i64, summary: RecordsSummary) -> IndexEntry {
    let mark = match !info.is_control() && summary.delay_mark {
        true => DELAY_MARK,
        false => 0,
    };
    IndexEntry {
        base_offset,
        last_offset_delta: info.last_offset_delta,
        size: info.len as u32,
        position: 0,
        max_timestamp: info.max_timestamp,
        producer_id: info.producer_id,
        producer_epoch: info.producer_epoch,
        attributes: info.attributes | mark,
        base_sequence: info.base_sequence,
        running_max_ts: i64::MIN,
        tag_summary: match info.is_control() {
            true => TAG_SUMMARY_UNKNOWN,
            false => summary.tag_summary,
        },
    }
}

fn duplicate_outcome(
    store: &Store,
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
            .find(last_offset, store.index_io())?
            .map_or(0, |(_, e)| e.end_position());
        DurableWait::pending(store.log.durable_tx.subscribe(), end)
    };
    Ok(AppendOutcome {
        base_offset,
        last_offset,
        log_append_time: -1,
        log_start_offset: st.log_start,
        duplicate: true,
        durable,
        committed: commit_wait(store, st, last_offset + 1),
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
pub(crate) const LOCATE_CHUNK_ENTRIES: usize = 64;

/// Locate the batches from index slot `from` on (below offset `end`) for a
/// read of up to `limit` bytes, at least one.
fn locate(
    store: &Store,
    st: &PartitionState,
    from: u64,
    limit: usize,
    end: i64,
) -> Result<Vec<Located>, StorageError> {
    let mut entries = Vec::new();
    let mut total = 0usize;
    let mut slot = from;
    'chunks: loop {
        let chunk = st
            .index
            .read_range(slot, LOCATE_CHUNK_ENTRIES, store.index_io())?;
        if chunk.is_empty() {
            break;
        }
        slot += chunk.len() as u64;
        for e in chunk {
            if e.base_offset >= end || (!entries.is_empty() && total + e.size as usize > limit) {
                break 'chunks;
            }
            total += e.size as usize;
            entries.push(e);
            if total >= limit {
                break 'chunks;
            }
        }
    }
    locate_entries(store, st, entries)
}

/// The segment of each of `entries` (in offset order); a broken promise of
/// the write side poisons the log.
pub(crate) fn locate_entries(
    store: &Store,
    st: &PartitionState,
    entries: Vec<IndexEntry>,
) -> Result<Vec<Located>, StorageError> {
    let segments = read(&store.log.segments)?;
    let found = locate_in(&segments, st, entries);
    // Poisoning takes the writer lock, which comes before `segments`.
    drop(segments);
    found.map_err(|broken| match broken {
        Broken::Invariant(what) => store.poison(format!("invariant broken: {what}")),
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
    store: &Store,
    part: PartitionId,
    items: &[Located],
) -> Result<Vec<u8>, StorageError> {
    let mut out = Vec::new();
    read_located_into(store, part, items, &mut out)?;
    Ok(out)
}

/// [`read_located`], appending to `out`: a caller that reads often keeps
/// one buffer rather than fault in fresh pages for every read. On an error
/// `out` holds what it held before.
pub(crate) fn read_located_into(
    store: &Store,
    part: PartitionId,
    items: &[Located],
    out: &mut Vec<u8>,
) -> Result<(), StorageError> {
    let start = out.len();
    let result = append_located(store, part, items, out);
    if result.is_err() {
        out.truncate(start);
    }
    result
}

/// The work of [`read_located_into`], which undoes a partial append.
fn append_located(
    store: &Store,
    part: PartitionId,
    items: &[Located],
    out: &mut Vec<u8>,
) -> Result<(), StorageError> {
    // Paired with the append side, which refuses a larger batch: a size
    // read from a damaged index must not size the buffer.
    for l in items {
        store.check(l.entry.size as usize <= ENTRY_BATCH_BYTES_MAX, || {
            format!(
                "index entry {} of {}-{} holds a batch of {} bytes, over the {} an entry may hold",
                l.entry.base_offset,
                part.topic_id,
                part.partition,
                l.entry.size,
                ENTRY_BATCH_BYTES_MAX
            )
        })?;
    }
    let total: usize = items
        .iter()
        .map(|l| l.entry.size as usize + ENTRY_HEADER_BYTES)
        .sum();
    out.reserve(total);
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
        crate::io::failpoint_for(store.log.io.as_ref(), "storage::segment_read")
            .and_then(|()| {
                store
                    .log
                    .io
                    .read_exact_at(&first.segment.file, buf, file_offset)
            })
            .map_err(|e| io_err(format!("reading {}", first.segment.path.display()), e))?;
        // Cut the headers out in place, checking each one names this batch.
        let mut dst = at;
        let mut src = at;
        for l in run {
            let header = out
                .get(src..src + ENTRY_HEADER_BYTES)
                .and_then(format::decode_entry_header);
            let body = src + ENTRY_HEADER_BYTES;
            // Paired with the write side: the entry the index points at names
            // the batch the index expects there, and the batch's own base
            // offset (which its CRC does not cover) is the one it was given.
            let ok = header.is_some_and(|h| {
                h.partition == part
                    && h.base_offset == l.entry.base_offset
                    && h.batch_len() == l.entry.size as usize
            }) && format::be_i64(out, body) == Some(l.entry.base_offset);
            store.check(ok, || {
                format!(
                    "the entry read at position {} of {} is batch {} of {}-{}",
                    l.entry.position,
                    first.segment.path.display(),
                    l.entry.base_offset,
                    part.topic_id,
                    part.partition
                )
            })?;
            out.copy_within(body..body + l.entry.size as usize, dst);
            dst += l.entry.size as usize;
            src = body + l.entry.size as usize;
        }
        out.truncate(dst);
        i = j;
    }
    Ok(())
}

/// Read whole batches from `offset`, at most `max_bytes` (at least one
/// batch). A read up to the last stable offset also names the aborted
/// transactions among what it returns.
pub(crate) fn read_from(
    store: &Store,
    part: &PartitionInner,
    offset: i64,
    max_bytes: usize,
    bound: ReadBound,
) -> Result<ReadOutcome, ReadError> {
    let (items, offsets, aborted) = {
        let st = lock(&part.state)?;
        let offsets = st.offsets();
        let Some((from, end)) = read_start(store, &st, offset, bound)? else {
            return Ok(ReadOutcome {
                records: Bytes::new(),
                offsets,
                aborted: Vec::new(),
            });
        };
        let limit = max_bytes.min(store.log.config.read_bytes_max);
        let items = locate(store, &st, from, limit, end)?;
        let hides = bound != ReadBound::LogEnd
            && items.iter().any(|i| i.entry.attributes & DELAY_MARK != 0);
        if hides {
            // Pending delayed records must not be seen: read them through
            // the filter that hides them (a replica read copies them).
            drop(st);
            return crate::filtered::read_filtered(store, part, (offset, max_bytes), bound, None);
        }
        let aborted = match (bound, items.last()) {
            (ReadBound::LastStable, Some(last)) => {
                st.aborted_in(offset, last.entry.last_offset() + 1, store.index_io())?
            }
            _ => Vec::new(),
        };
        (items, offsets, aborted)
    };
    let records = read_located(store, part.id, &items)?;
    Ok(ReadOutcome {
        records: Bytes::from(records),
        offsets,
        aborted,
    })
}

/// Where a read from `offset` under `bound` starts: the index slot of the
/// batch holding `offset` (or the next one, since a compacted partition has
/// gaps) and the offset the read stops before; `None` when nothing is there
/// to read yet. OFFSET_OUT_OF_RANGE outside the log.
pub(crate) fn read_start(
    store: &Store,
    st: &PartitionState,
    offset: i64,
    bound: ReadBound,
) -> Result<Option<(u64, i64)>, ReadError> {
    let (end, valid_end) = match bound {
        ReadBound::HighWatermark => (st.hw, st.hw),
        // Between the last stable offset and the high watermark there is
        // nothing to read yet, which is not out of range.
        ReadBound::LastStable => (st.offsets().last_stable, st.hw),
        ReadBound::LogEnd => (st.log_end, st.log_end),
    };
    if offset < st.log_start || offset > valid_end {
        return Err(ReadError::OffsetOutOfRange {
            offset,
            log_start: st.log_start,
            log_end: valid_end,
        });
    }
    if offset >= end {
        return Ok(None);
    }
    Ok(st
        .index
        .find_from(offset, store.index_io())?
        .map(|from| (from, end)))
}

/// First record at or after `timestamp`, as (offset, timestamp).
pub(crate) fn offset_for_timestamp(
    store: &Store,
    part: &PartitionInner,
    timestamp: i64,
) -> Result<Option<(i64, i64)>, ReadError> {
    loop_candidates(store, part, |st| {
        Ok((st.index.find_time(timestamp, store.index_io())?, timestamp))
    })
}

/// The record with the largest timestamp (the first one, if several share it).
pub(crate) fn max_timestamp(
    store: &Store,
    part: &PartitionInner,
) -> Result<Option<(i64, i64)>, ReadError> {
    loop_candidates(store, part, |st| {
        Ok(
            match st.index.max_timestamp_entry(st.hw, store.index_io())? {
                Some((slot, e)) => (slot, e.max_timestamp),
                None => (st.index.next_slot(), i64::MAX),
            },
        )
    })
}

/// Candidate batches a time look-up reads, at most: a batch's records may
/// all sit below the log start, so a few more than one.
const TIME_CANDIDATES_MAX: usize = 4;

/// Scan visible batches from the slot `pick` chooses for the first record
/// at or after the timestamp it returns.
fn loop_candidates(
    store: &Store,
    part: &PartitionInner,
    pick: impl Fn(&PartitionState) -> Result<(u64, i64), StorageError>,
) -> Result<Option<(i64, i64)>, ReadError> {
    let (candidates, log_start, timestamp) = {
        let st = lock(&part.state)?;
        let (from, timestamp) = pick(&st)?;
        let mut items = Vec::new();
        st.index
            .scan(from, st.index.next_slot(), store.index_io(), |_, e| {
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
        let segs = read(&store.log.segments)?;
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
        let bytes = Bytes::from(read_located(store, part.id, std::slice::from_ref(l))?);
        if let Some(found) = batch::find_record_at_or_after(&bytes, log_start, timestamp) {
            return Ok(Some(found));
        }
    }
    Ok(None)
}
