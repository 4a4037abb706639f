//! One partition's queue index: a fixed-width entry per stored batch, in
//! offset order, in the partition's index file, with only a bounded hot tail
//! in memory.
//!
//! Memory does not grow with retained data. The newest entries (at most the
//! cap the log hands down from `LogConfig::index_memory_bytes`) stay in
//! memory, so tailing consumers and producers never touch the file; an
//! offset or time look-up on older data binary-searches the index file with
//! positional reads (each entry carries the running maximum timestamp, so
//! time look-ups can binary-search too). Besides the tail, the index keeps
//! a few totals: live bytes for `retention.bytes`, and per commit-log
//! segment an upper bound of what the partition has there (see
//! [`SegmentUse`]), so segment deletion and the cleaner never scan the index.
//!
//! Slots: entry `n` of the file is slot `n`. Slots below `first_slot` are
//! dead (below the log start); slots from `written_slot` on are only in
//! memory until the next flush. A file entry is only ever rewritten in place
//! to move its position (the cleaner); compaction replaces the whole file.

use std::collections::{BTreeMap, VecDeque};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use crate::error::StorageError;
use crate::format::{INDEX_ENTRY_BYTES, INDEX_HEADER_BYTES, IndexEntry, IndexSummary, SegmentUse};
use crate::io::IndexIo;

/// Buffered entries are written to the file once they reach this size
/// (128 entries), even before the next checkpoint.
const UNWRITTEN_BYTES_MAX: usize = 8 * 1024;
/// Entries of a scan's first positional read (one 4 KiB page); each later
/// read doubles, up to [`SCAN_CHUNK_ENTRIES_MAX`]. Most scans stop at their
/// first entries (retention, time look-ups), so they read one page, not 64 KiB.
const SCAN_CHUNK_ENTRIES_MIN: usize = 64;
/// The most entries one positional read of a scan takes (64 KiB).
const SCAN_CHUNK_ENTRIES_MAX: usize = 1024;
/// The fewest entries a partition keeps in memory, whatever the budget.
pub(crate) const HOT_ENTRIES_MIN: usize = 8;

/// What a loaded index file holds, for [`QueueIndex::loaded`].
pub(crate) struct Loaded {
    pub first_slot: u64,
    pub next_slot: u64,
    /// Running maximum timestamp of the last entry (`i64::MIN` when none).
    pub last_running_max: i64,
    /// Running maximum timestamp of the entry before `first_slot`.
    pub dead_max_ts: i64,
    pub summary: IndexSummary,
}

/// A partition's queue index.
pub(crate) struct QueueIndex {
    path: PathBuf,
    first_slot: u64,
    next_slot: u64,
    /// Entries of slots `next_slot - hot.len() ..`, in order.
    hot: VecDeque<IndexEntry>,
    /// Slots from here on are not in the file yet (all of them are in `hot`).
    written_slot: u64,
    last_running_max: i64,
    dead_max_ts: i64,
    live_bytes: u64,
    segments: BTreeMap<u64, SegmentUse>,
}

impl QueueIndex {
    /// An empty index whose file is at `path`.
    pub fn new(path: PathBuf) -> Self {
        Self::loaded(
            path,
            Loaded {
                first_slot: 0,
                next_slot: 0,
                last_running_max: i64::MIN,
                dead_max_ts: i64::MIN,
                summary: IndexSummary::default(),
            },
        )
    }

    /// An index over a file recovery has loaded (nothing of it in memory yet).
    pub fn loaded(path: PathBuf, l: Loaded) -> Self {
        Self {
            path,
            first_slot: l.first_slot,
            next_slot: l.next_slot,
            hot: VecDeque::new(),
            written_slot: l.next_slot,
            last_running_max: l.last_running_max,
            dead_max_ts: l.dead_max_ts,
            live_bytes: l.summary.live_bytes,
            segments: l.summary.segments.into_iter().collect(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Slot the next entry gets.
    pub fn next_slot(&self) -> u64 {
        self.next_slot
    }

    /// The slot of the first live batch.
    pub fn first_slot(&self) -> u64 {
        self.first_slot
    }

    /// Bytes of the live batches.
    pub fn live_bytes(&self) -> u64 {
        self.live_bytes
    }

    /// Entries held in memory.
    #[cfg(test)]
    pub fn hot_len(&self) -> usize {
        self.hot.len()
    }

    /// The entries held in memory, to break them on purpose.
    #[cfg(test)]
    pub fn hot_mut(&mut self) -> &mut VecDeque<IndexEntry> {
        &mut self.hot
    }

    /// The partition's use of each segment (an upper bound; see [`SegmentUse`]).
    pub fn segment_uses(&self) -> &BTreeMap<u64, SegmentUse> {
        &self.segments
    }

    fn hot_start(&self) -> u64 {
        self.next_slot - self.hot.len() as u64
    }

    /// Record that the partition has a batch ending at `last_offset` of
    /// `bytes` in the segment at `segment_base`.
    pub fn note_segment_use(&mut self, segment_base: u64, bytes: u64, last_offset: i64) {
        add_use(&mut self.segments, segment_base, bytes, last_offset);
    }

    /// The cleaner moved every live batch of the partition out of the
    /// segment: only batches below `log_start` can be left there.
    pub fn segment_emptied(&mut self, segment_base: u64, log_start: i64) {
        if let Some(u) = self.segments.get_mut(&segment_base) {
            u.bytes = 0;
            u.max_last_offset = u.max_last_offset.min(log_start - 1);
        }
    }

    /// Forget segments that were deleted.
    pub fn forget_segments(&mut self, deleted: &[u64]) {
        for base in deleted {
            self.segments.remove(base);
        }
    }

    /// Add an entry (its running maximum is filled in here) in the segment
    /// at `segment_base`, keeping at most `hot_max` entries in memory.
    /// Returns the entry's slot.
    pub fn push(
        &mut self,
        mut entry: IndexEntry,
        segment_base: u64,
        hot_max: usize,
        ix: IndexIo<'_>,
    ) -> Result<u64, StorageError> {
        entry.running_max_ts = self.last_running_max.max(entry.max_timestamp);
        self.last_running_max = entry.running_max_ts;
        let slot = self.next_slot;
        self.next_slot += 1;
        self.hot.push_back(entry);
        self.live_bytes += u64::from(entry.size);
        let end = entry.end_position() - entry.position;
        self.note_segment_use(segment_base, end, entry.last_offset());
        let unwritten = (self.next_slot - self.written_slot) as usize * INDEX_ENTRY_BYTES;
        let hot_max = hot_max.max(HOT_ENTRIES_MIN);
        if unwritten >= UNWRITTEN_BYTES_MAX || self.hot.len() > hot_max {
            self.flush(ix)?;
        }
        while self.hot.len() > hot_max {
            self.hot.pop_front();
        }
        Ok(slot)
    }

    /// Account an entry its caller wrote to a new index file (compaction's
    /// rewrite): slot, running maximum, live bytes and segment use follow;
    /// nothing stays in memory. Returns the entry with its running maximum.
    pub fn add_rewritten(&mut self, mut entry: IndexEntry, segment_base: u64) -> IndexEntry {
        entry.running_max_ts = self.last_running_max.max(entry.max_timestamp);
        self.last_running_max = entry.running_max_ts;
        self.next_slot += 1;
        self.written_slot = self.next_slot;
        self.live_bytes += u64::from(entry.size);
        let end = entry.end_position() - entry.position;
        self.note_segment_use(segment_base, end, entry.last_offset());
        entry
    }

    /// Finish loading an index file: find the first live slot for
    /// `log_start` and read the running maxima at both ends. Returns the
    /// last entry, if any.
    pub fn finish_load(
        &mut self,
        log_start: i64,
        ix: IndexIo<'_>,
    ) -> Result<Option<IndexEntry>, StorageError> {
        if self.next_slot == 0 {
            return Ok(None);
        }
        let last = self.get(self.next_slot - 1, ix)?;
        self.last_running_max = last.running_max_ts;
        self.first_slot = self.partition_point(ix, |e| e.last_offset() < log_start)?;
        if self.first_slot > 0 {
            self.dead_max_ts = self.get(self.first_slot - 1, ix)?.running_max_ts;
        }
        Ok(Some(last))
    }

    /// Write the entries only memory holds to the index file (no fsync).
    pub fn flush(&mut self, ix: IndexIo<'_>) -> Result<(), StorageError> {
        if self.written_slot >= self.next_slot {
            return Ok(());
        }
        let from = (self.written_slot - self.hot_start()) as usize;
        let mut bytes = Vec::with_capacity((self.hot.len() - from) * INDEX_ENTRY_BYTES);
        for e in self.hot.range(from..) {
            bytes.extend_from_slice(&e.encode());
        }
        ix.write_at(&self.path, &bytes, slot_offset(self.written_slot))?;
        self.written_slot = self.next_slot;
        Ok(())
    }

    /// The entry at `slot` (which must be below `next_slot`).
    pub fn get(&self, slot: u64, ix: IndexIo<'_>) -> Result<IndexEntry, StorageError> {
        if slot >= self.hot_start() {
            return self
                .hot
                .get((slot - self.hot_start()) as usize)
                .copied()
                .ok_or_else(|| self.corrupt(slot, "past the last entry"));
        }
        let mut buf = [0u8; INDEX_ENTRY_BYTES];
        ix.read_at(&self.path, &mut buf, slot_offset(slot))?;
        IndexEntry::decode(&buf).ok_or_else(|| self.corrupt(slot, "fails its CRC"))
    }

    /// Up to `max` entries from `from` on (fewer at the end of the index).
    pub fn read_range(
        &self,
        from: u64,
        max: usize,
        ix: IndexIo<'_>,
    ) -> Result<Vec<IndexEntry>, StorageError> {
        let end = self.next_slot.min(from.saturating_add(max as u64));
        let mut out = Vec::with_capacity(end.saturating_sub(from) as usize);
        let cold_end = end.min(self.hot_start());
        if from < cold_end {
            let n = (cold_end - from) as usize;
            let mut buf = vec![0u8; n * INDEX_ENTRY_BYTES];
            ix.read_at(&self.path, &mut buf, slot_offset(from))?;
            for (i, chunk) in buf.chunks_exact(INDEX_ENTRY_BYTES).enumerate() {
                let e = IndexEntry::decode(chunk)
                    .ok_or_else(|| self.corrupt(from + i as u64, "fails its CRC"))?;
                out.push(e);
            }
        }
        let hot_from = from.max(self.hot_start());
        for slot in hot_from..end {
            if let Some(e) = self.hot.get((slot - self.hot_start()) as usize) {
                out.push(*e);
            }
        }
        Ok(out)
    }

    /// Visit the entries of slots `from..to` in order, until `visit` breaks.
    pub fn scan(
        &self,
        from: u64,
        to: u64,
        ix: IndexIo<'_>,
        mut visit: impl FnMut(u64, &IndexEntry) -> ControlFlow<()>,
    ) -> Result<(), StorageError> {
        let to = to.min(self.next_slot);
        let mut slot = from;
        let mut chunk_entries = SCAN_CHUNK_ENTRIES_MIN;
        while slot < to {
            let chunk = self.read_range(slot, chunk_entries.min((to - slot) as usize), ix)?;
            if chunk.is_empty() {
                break;
            }
            chunk_entries = (chunk_entries * 2).min(SCAN_CHUNK_ENTRIES_MAX);
            for e in &chunk {
                if visit(slot, e).is_break() {
                    return Ok(());
                }
                slot += 1;
            }
        }
        Ok(())
    }

    /// Visit the live entries in order, until `visit` breaks.
    pub fn scan_live(
        &self,
        ix: IndexIo<'_>,
        visit: impl FnMut(u64, &IndexEntry) -> ControlFlow<()>,
    ) -> Result<(), StorageError> {
        self.scan(self.first_slot, self.next_slot, ix, visit)
    }

    /// The first live slot whose entry fails `before` (which must hold for
    /// a prefix of the live entries and fail for the rest); `next_slot`
    /// when it holds for all.
    pub fn partition_point(
        &self,
        ix: IndexIo<'_>,
        before: impl Fn(&IndexEntry) -> bool,
    ) -> Result<u64, StorageError> {
        let hot_start = self.hot_start().max(self.first_slot);
        // Most look-ups are near the tail: try memory first.
        if let Some(front) = self.hot.get((hot_start - self.hot_start()) as usize)
            && before(front)
        {
            let skip = (hot_start - self.hot_start()) as usize;
            let in_hot = self.hot.range(skip..).take_while(|e| before(e)).count();
            return Ok(hot_start + in_hot as u64);
        }
        let (mut lo, mut hi) = (self.first_slot, hot_start.min(self.next_slot));
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if before(&self.get(mid, ix)?) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        Ok(lo)
    }

    /// Slot of the first live batch ending at or after `offset`: the batch
    /// holding it, or the next one when compaction removed it.
    pub fn find_from(&self, offset: i64, ix: IndexIo<'_>) -> Result<Option<u64>, StorageError> {
        let slot = self.partition_point(ix, |e| e.last_offset() < offset)?;
        Ok((slot < self.next_slot).then_some(slot))
    }

    /// Slot and entry of the live batch holding `offset`.
    pub fn find(
        &self,
        offset: i64,
        ix: IndexIo<'_>,
    ) -> Result<Option<(u64, IndexEntry)>, StorageError> {
        let Some(slot) = self.find_from(offset, ix)? else {
            return Ok(None);
        };
        let e = self.get(slot, ix)?;
        Ok((e.base_offset <= offset).then_some((slot, e)))
    }

    /// Slot of the first live batch that may hold a record at or after
    /// `timestamp`: the first whose running maximum reaches it. The running
    /// maximum in the file also covers dead entries; when a dead one reaches
    /// the timestamp it says nothing about the live ones, and the answer is
    /// the first live slot (the caller scans on from there).
    pub fn find_time(&self, timestamp: i64, ix: IndexIo<'_>) -> Result<u64, StorageError> {
        if self.dead_max_ts >= timestamp {
            return Ok(self.first_slot);
        }
        self.partition_point(ix, |e| e.running_max_ts < timestamp)
    }

    /// The live entry with the largest max timestamp below `end_offset`
    /// (the first of several equal), as (slot, entry).
    pub fn max_timestamp_entry(
        &self,
        end_offset: i64,
        ix: IndexIo<'_>,
    ) -> Result<Option<(u64, IndexEntry)>, StorageError> {
        let visible = self.partition_point(ix, |e| e.base_offset < end_offset)?;
        if visible <= self.first_slot {
            return Ok(None);
        }
        let last = self.get(visible - 1, ix)?;
        if self.dead_max_ts < last.running_max_ts {
            let max = last.running_max_ts;
            let slot = self.partition_point(ix, |e| e.running_max_ts < max)?;
            return Ok(Some((slot, self.get(slot, ix)?)));
        }
        let mut best: Option<(u64, IndexEntry)> = None;
        self.scan(self.first_slot, visible, ix, |slot, e| {
            if best.is_none_or(|(_, b)| e.max_timestamp > b.max_timestamp) {
                best = Some((slot, *e));
            }
            ControlFlow::Continue(())
        })?;
        Ok(best)
    }

    /// Point the entry at `slot` at a new position (the cleaner moved it).
    pub fn set_position(
        &mut self,
        slot: u64,
        position: u64,
        ix: IndexIo<'_>,
    ) -> Result<IndexEntry, StorageError> {
        let mut e = self.get(slot, ix)?;
        e.position = position;
        if slot >= self.hot_start() {
            let at = (slot - self.hot_start()) as usize;
            if let Some(h) = self.hot.get_mut(at) {
                *h = e;
            }
        }
        if slot < self.written_slot {
            ix.write_at(&self.path, &e.encode(), slot_offset(slot))?;
        }
        Ok(e)
    }

    /// Forget the batches that end below `log_start`: they are dead.
    pub fn trim(&mut self, log_start: i64, ix: IndexIo<'_>) -> Result<(), StorageError> {
        let new_first = self.partition_point(ix, |e| e.last_offset() < log_start)?;
        if new_first <= self.first_slot {
            return Ok(());
        }
        // The file must hold every slot below its last entry.
        if new_first > self.written_slot {
            self.flush(ix)?;
        }
        let mut dead_bytes = 0u64;
        let mut dead_max = self.dead_max_ts;
        self.scan(self.first_slot, new_first, ix, |_, e| {
            dead_bytes += u64::from(e.size);
            dead_max = dead_max.max(e.running_max_ts);
            ControlFlow::Continue(())
        })?;
        self.live_bytes = self.live_bytes.saturating_sub(dead_bytes);
        self.dead_max_ts = dead_max;
        self.first_slot = new_first;
        while self.hot_start() < self.first_slot && !self.hot.is_empty() {
            self.hot.pop_front();
        }
        Ok(())
    }

    /// Forget the batches from the one holding `offset` on (a truncation;
    /// `offset` at or above the log start). Memory only: the caller cuts
    /// the file with [`Self::truncate_file`] before anything can be written
    /// at the freed slots. Returns the new end offset (the base offset of
    /// the first batch forgotten, `offset` itself at a batch boundary) and
    /// the first slot forgotten; `None` when nothing lies at or past `offset`.
    pub fn truncate_memory(
        &mut self,
        offset: i64,
        ix: IndexIo<'_>,
    ) -> Result<Option<(i64, u64)>, StorageError> {
        let cut = self.partition_point(ix, |e| e.last_offset() < offset)?;
        if cut >= self.next_slot {
            return Ok(None);
        }
        let new_end = self.get(cut, ix)?.base_offset.min(offset);
        let mut gone = 0u64;
        self.scan(cut, self.next_slot, ix, |_, e| {
            gone += u64::from(e.size);
            ControlFlow::Continue(())
        })?;
        self.live_bytes = self.live_bytes.saturating_sub(gone);
        let keep_hot = cut.saturating_sub(self.hot_start()) as usize;
        self.hot.truncate(keep_hot);
        self.next_slot = cut;
        self.written_slot = self.written_slot.min(cut);
        self.last_running_max = match cut.checked_sub(1) {
            Some(prev) => self.get(prev, ix)?.running_max_ts,
            None => i64::MIN,
        };
        Ok(Some((new_end, cut)))
    }

    /// Cut the index file after `slot` entries (a truncation) and have the
    /// next checkpoint fsync it.
    pub fn truncate_file(&self, slot: u64, ix: IndexIo<'_>) -> Result<(), StorageError> {
        ix.files.truncate(ix.io, &self.path, slot_offset(slot))
    }

    /// Bytes of the batches whose base offset is at or above `offset`.
    fn bytes_from(&self, offset: i64, ix: IndexIo<'_>) -> Result<u64, StorageError> {
        let from = self.partition_point(ix, |e| e.base_offset < offset)?;
        let mut bytes = 0;
        self.scan(from, self.next_slot, ix, |_, e| {
            bytes += u64::from(e.size);
            ControlFlow::Continue(())
        })?;
        Ok(bytes)
    }

    /// The totals a checkpoint that vouches for the entries below
    /// `index_end_offset` records.
    pub fn summary(
        &self,
        index_end_offset: i64,
        ix: IndexIo<'_>,
    ) -> Result<IndexSummary, StorageError> {
        Ok(IndexSummary {
            live_bytes: self
                .live_bytes
                .saturating_sub(self.bytes_from(index_end_offset, ix)?),
            segments: self.segments.iter().map(|(b, u)| (*b, *u)).collect(),
        })
    }

    /// Recompute live bytes and segment use from the live entries (an index
    /// loaded without a summary). `segment_of` names the segment holding a position.
    pub fn rebuild_summary(
        &mut self,
        ix: IndexIo<'_>,
        segment_of: impl Fn(u64) -> Option<u64>,
    ) -> Result<(), StorageError> {
        let mut live = 0u64;
        let mut uses: BTreeMap<u64, SegmentUse> = BTreeMap::new();
        self.scan_live(ix, |_, e| {
            live += u64::from(e.size);
            if let Some(base) = segment_of(e.position) {
                add_use(
                    &mut uses,
                    base,
                    e.end_position() - e.position,
                    e.last_offset(),
                );
            }
            ControlFlow::Continue(())
        })?;
        self.live_bytes = live;
        self.segments = uses;
        Ok(())
    }

    fn corrupt(&self, slot: u64, what: &str) -> StorageError {
        StorageError::Corrupt {
            file: self.path.display().to_string(),
            detail: format!("index entry {slot} {what}"),
        }
    }
}

fn add_use(uses: &mut BTreeMap<u64, SegmentUse>, base: u64, bytes: u64, last_offset: i64) {
    let u = uses.entry(base).or_insert(SegmentUse {
        bytes: 0,
        max_last_offset: i64::MIN,
    });
    u.bytes += bytes;
    u.max_last_offset = u.max_last_offset.max(last_offset);
}

/// File offset of a slot.
pub(crate) fn slot_offset(slot: u64) -> u64 {
    INDEX_HEADER_BYTES + slot * INDEX_ENTRY_BYTES as u64
}

#[cfg(test)]
mod tests {
    //! The index against a model: whatever lies in memory or only on disk,
    //! reads, offset and time look-ups, trims and reopens answer as a plain
    //! list of every batch would.

    use proptest::prelude::*;

    use crate::batch::test_batches::batch_with;
    use crate::tests::{block_on, pid};
    use crate::{CommitLog, LogConfig, PartitionConfig, SystemClock};

    #[derive(Debug, Clone)]
    enum Op {
        /// Append a batch of `count` records whose timestamps start at `ts`
        /// (so they may go backwards between batches).
        Append { count: usize, ts: i64 },
        /// DeleteRecords up to this fraction (per mille) of the log end.
        Delete { per_mille: i64 },
        /// Close and reopen the log.
        Reopen,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            8 => (1usize..4, 0i64..2_000).prop_map(|(count, ts)| Op::Append { count, ts }),
            1 => (0i64..1_000).prop_map(|per_mille| Op::Delete { per_mille }),
            1 => Just(Op::Reopen),
        ]
    }

    /// One stored batch of the model: base offset, record timestamps.
    type ModelBatch = (i64, Vec<i64>);

    fn config(hot_entries: u64) -> LogConfig {
        LogConfig {
            segment_bytes: 4_096,
            index_memory_bytes: hot_entries
                * std::mem::size_of::<crate::format::IndexEntry>() as u64,
            ..LogConfig::default()
        }
    }

    fn open(dir: &std::path::Path, hot_entries: u64) -> CommitLog {
        CommitLog::open(dir, config(hot_entries), std::sync::Arc::new(SystemClock))
            .unwrap()
            .0
    }

    /// The first record at or after `ts` among records at or after `log_start`.
    fn model_time(model: &[ModelBatch], log_start: i64, ts: i64) -> Option<(i64, i64)> {
        model.iter().find_map(|(base, stamps)| {
            stamps
                .iter()
                .enumerate()
                .map(|(i, t)| (*base + i as i64, *t))
                .find(|(o, t)| *o >= log_start && *t >= ts)
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

        #[test]
        fn reads_and_look_ups_match_a_model_whatever_lies_only_on_disk(
            ops in proptest::collection::vec(op(), 1..120),
            hot_entries in 0u64..24,
        ) {
            let dir = tempfile::tempdir().unwrap();
            let mut log = open(dir.path(), hot_entries);
            let mut p = log.create_partition(pid(0), PartitionConfig::default()).unwrap();
            let mut model: Vec<ModelBatch> = Vec::new();
            let mut log_start = 0i64;
            let mut end = 0i64;
            for op in ops {
                match op {
                    Op::Append { count, ts } => {
                        let stamps: Vec<i64> = (0..count as i64).map(|i| ts + i).collect();
                        let b = batch_with(count, 5, &stamps, kafka_protocol::records::Compression::None, None);
                        let out = p.append(b).unwrap();
                        block_on(out.durable.wait()).unwrap();
                        prop_assert_eq!(out.base_offset, end);
                        model.push((end, stamps));
                        end += count as i64;
                    }
                    Op::Delete { per_mille } => {
                        let target = (end * per_mille / 1_000).max(log_start);
                        prop_assert_eq!(p.delete_records_before(target).unwrap(), target);
                        log_start = target;
                    }
                    Op::Reopen => {
                        log.shutdown().unwrap();
                        drop((log, p));
                        log = open(dir.path(), hot_entries);
                        p = log.partition(pid(0)).unwrap();
                    }
                }
                let hot = p.inner.state.lock().unwrap().index().hot_len();
                prop_assert!(hot <= (hot_entries as usize).max(crate::index::HOT_ENTRIES_MIN));
            }
            prop_assert_eq!(p.offsets().log_start, log_start);
            prop_assert_eq!(p.offsets().high_watermark, end);
            // Every offset reads from the batch that holds it.
            for offset in log_start..end {
                let read = p.read(offset, 1).unwrap();
                let batches = crate::batch::parse_payload(&read.records, u32::MAX).unwrap();
                let first = batches.first().unwrap();
                let base = crate::format::be_i64(&read.records, first.start).unwrap();
                let holder = model.iter().rev().find(|(b, _)| *b <= offset).unwrap();
                prop_assert_eq!(base, holder.0);
            }
            // Time look-ups, including timestamps between, before and after all records.
            for ts in (-1..2_010).step_by(37) {
                prop_assert_eq!(p.offset_for_timestamp(ts).unwrap(), model_time(&model, log_start, ts));
            }
            let max = model_time(&model, log_start, i64::MIN).map(|_| {
                let best = model
                    .iter()
                    .flat_map(|(base, s)| s.iter().enumerate().map(move |(i, t)| (*base + i as i64, *t)))
                    .filter(|(o, _)| *o >= log_start)
                    .map(|(_, t)| t)
                    .max()
                    .unwrap();
                model_time(&model, log_start, best).unwrap()
            });
            prop_assert_eq!(p.max_timestamp().unwrap(), max);
            log.shutdown().unwrap();
        }
    }
}
