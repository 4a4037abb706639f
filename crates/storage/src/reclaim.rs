//! Giving disk space back while the log is poisoned (a write or fsync
//! failed, typically because the disk is full): appends stay refused until a
//! restart, but deleting a topic or records (DeleteRecords) can still free
//! whole segments, so an operator can make room without a restart.
//!
//! The usual order (fsync, checkpoint, then delete) cannot be followed: a
//! poisoned log vouches for nothing new, and index positions moved by a
//! failed maintenance run may not be durable. So:
//! - A log-start move is made durable by a checkpoint that copies the last
//!   one on disk (its position and index ends, which were durable) and only
//!   raises log-start offsets ([`checkpoint_log_starts`]).
//! - A segment's liveness is decided from what recovery itself would read:
//!   the segment's own entry headers on disk, the partitions that still have
//!   an index file, and the log starts of the checkpoint on disk. A segment is
//!   removed only when it ends at or before that checkpoint's position (so a
//!   restart never scans across the hole) and every entry in it belongs to a
//!   removed partition or ends below its partition's checkpointed log start
//!   (so no restart can look for a batch in it).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::PartitionId;
use crate::error::StorageError;
use crate::format::{self, Checkpoint, ENTRY_HEADER_BYTES};
use crate::io::{FileIo, durable};
use crate::log::{Segment, io_err, lock, read};
use crate::store::{CHECKPOINT_FILE, Store};

/// Temporary name of a log-start checkpoint. Not the usual one: a checkpoint
/// that was in flight when the log was poisoned may still be writing that,
/// and each rename must carry a whole, fsync'd file.
pub(crate) const LOG_STARTS_TMP_FILE: &str = "checkpoint.log-starts.tmp";

/// Bytes of an entry read to judge it: the entry header, then the batch
/// header up to and including `lastOffsetDelta` (batch bytes 23..27).
const ENTRY_JUDGED_BYTES: usize = ENTRY_HEADER_BYTES + 27;

/// The error of a write refused because the log is poisoned.
pub(crate) fn refused(store: &Store) -> StorageError {
    let reason = store.log.durable_tx.borrow().poisoned.clone();
    StorageError::Poisoned {
        reason: reason.unwrap_or_else(|| Arc::from("the commit log is poisoned")),
    }
}

/// Make the registered partitions' current log-start offsets durable while
/// the log is poisoned: rewrite the checkpoint on disk with the same position
/// and index ends, raised log starts, and without removed partitions.
/// Returns the partitions of `required` not in that checkpoint (their log
/// start cannot be recorded without vouching for their index).
pub(crate) fn checkpoint_log_starts(
    store: &Store,
    required: &[PartitionId],
) -> Result<Vec<PartitionId>, StorageError> {
    let path = store.log.dir.join(CHECKPOINT_FILE);
    let Some(old) = crate::recovery::load_checkpoint(&path, store.log.io.as_ref())? else {
        return Err(refused(store));
    };
    let recorded: HashSet<PartitionId> = old.partitions.iter().map(|p| p.id).collect();
    let unrecorded: Vec<PartitionId> = required
        .iter()
        .copied()
        .filter(|id| !recorded.contains(id))
        .collect();
    let registry = read(&store.registry)?;
    let mut new = Checkpoint {
        position: old.position,
        partitions: Vec::with_capacity(old.partitions.len()),
    };
    for mut p in old.partitions.iter().cloned() {
        let Some(part) = registry.get(&p.id) else {
            continue; // removed: its index file is gone
        };
        let st = lock(&part.state)?;
        if st.removed() {
            continue;
        }
        if st.log_start() > p.log_start {
            p.log_start = st.log_start();
            // Its live bytes were counted from the old log start: the next
            // open recounts them from the index file.
            p.summary = None;
        }
        new.partitions.push(p);
    }
    drop(registry);
    if new == old {
        return Ok(unrecorded);
    }
    durable::replace_file(
        store.log.io.as_ref(),
        [
            "storage::log_starts_sync",
            "storage::log_starts_rename",
            "storage::log_starts_dir_sync",
        ],
        &store.log.dir.join(LOG_STARTS_TMP_FILE),
        &path,
        |f| store.log.io.write_all_at(f, &new.encode(), 0),
    )
    .map_err(|e| {
        StorageError::from_replace(
            format!("writing the checkpoint in {}", store.log.dir.display()),
            e,
        )
    })
    .map(|()| unrecorded)
}

/// What maintenance does while the log is poisoned: record log-start moves,
/// then free the segments nothing durable needs.
pub(crate) fn run_while_poisoned(store: &Store) -> Result<(), StorageError> {
    checkpoint_log_starts(store, &[])?;
    segments_of_dead_data(store).map(|_| ())
}

/// Remove the closed segments, below the checkpoint on disk, whose every
/// entry belongs to a removed partition or ends below its partition's
/// checkpointed log start. Returns how many were removed.
pub(crate) fn segments_of_dead_data(store: &Store) -> Result<usize, StorageError> {
    let Some(checkpoint) = crate::recovery::load_checkpoint(
        &store.log.dir.join(CHECKPOINT_FILE),
        store.log.io.as_ref(),
    )?
    else {
        return Ok(0);
    };
    // The unlinks of removed partitions' index files must be durable before
    // their batches' segments go: recovery finds partitions by index file.
    durable::sync_dir(
        store.log.io.as_ref(),
        "storage::dead_data_index_dir_sync",
        &store.index_dir,
    )
    .map_err(|e| io_err(format!("fsync of {}", store.index_dir.display()), e))?;
    let registered: HashSet<PartitionId> = read(&store.registry)?.keys().copied().collect();
    let log_starts: HashMap<PartitionId, i64> = checkpoint
        .partitions
        .iter()
        .map(|p| (p.id, p.log_start))
        .collect();
    let is_dead = |id: PartitionId, last_offset: i64| {
        let removed = !registered.contains(&id)
            && !crate::recovery::index_path(&store.index_dir, id).exists();
        removed
            || log_starts
                .get(&id)
                .is_some_and(|start| last_offset < *start)
    };
    let active = lock(&store.log.writer)?.active.base;
    let closed: Vec<(Arc<Segment>, u64)> = {
        let segs = read(&store.log.segments)?;
        let bases: Vec<u64> = segs.keys().copied().collect();
        bases
            .windows(2)
            .filter_map(|w| Some((segs.get(&w[0])?.clone(), w[1])))
            .filter(|(s, end)| s.base != active && *end <= checkpoint.position)
            .collect()
    };
    let mut dead = Vec::new();
    for (seg, end) in closed {
        if holds_only_dead(store.log.io.as_ref(), &seg, end, &is_dead) {
            dead.push(seg.base);
        }
    }
    crate::maintenance::delete_segments(store, &dead)?;
    if !dead.is_empty() {
        tracing::warn!(
            segments = dead.len(),
            "the commit log is poisoned (appends are refused until restart); removed segments \
             that held only deleted data"
        );
    }
    Ok(dead.len())
}

/// Whether every entry of `seg` (which ends at log position `end`) is dead:
/// `dead(partition, last offset)` holds for it. Any entry that cannot be
/// read or decoded keeps the segment.
fn holds_only_dead(
    io: &dyn FileIo,
    seg: &Segment,
    end: u64,
    dead: &dyn Fn(PartitionId, i64) -> bool,
) -> bool {
    let mut pos = seg.base;
    let mut bytes = [0u8; ENTRY_JUDGED_BYTES];
    while pos < end {
        if io
            .read_exact_at(&seg.file, &mut bytes, seg.file_offset(pos))
            .is_err()
        {
            return false;
        }
        let Some(h) = format::decode_entry_header(&bytes) else {
            return false;
        };
        if h.kind == format::EntryKind::Truncation {
            // Needed only past the checkpoint, and this segment ends before it.
            pos += (format::ENTRY_PREFIX_BYTES + h.body_len as usize) as u64;
            continue;
        }
        let Some(delta) = format::be_i32(&bytes, ENTRY_HEADER_BYTES + 23) else {
            return false;
        };
        if !dead(h.partition, h.base_offset + i64::from(delta)) {
            return false;
        }
        pos += (format::ENTRY_PREFIX_BYTES + h.body_len as usize) as u64;
    }
    pos == end
}

#[cfg(test)]
mod tests {
    use std::fs::File;
    use std::sync::atomic::{AtomicBool, Ordering};

    use crate::batch::test_batches::batch;
    use crate::io::FileIo;
    use crate::tests::{ManualClock, block_on, pid, stored};
    use crate::*;

    /// File I/O whose fdatasync fails once `fail` is set.
    #[derive(Default)]
    struct FailingSync {
        fail: AtomicBool,
    }

    impl FileIo for FailingSync {
        fn sync_data(&self, file: &File) -> std::io::Result<()> {
            if self.fail.load(Ordering::SeqCst) {
                return Err(std::io::Error::from_raw_os_error(28));
            }
            file.sync_data()
        }
    }

    fn config() -> LogConfig {
        LogConfig {
            segment_bytes: 1_000,
            index_checkpoint_interval_ms: 3_600_000,
            ..LogConfig::default()
        }
    }

    fn segment_count(dir: &std::path::Path) -> usize {
        std::fs::read_dir(dir.join("log")).unwrap().count()
    }

    #[test]
    fn a_poisoned_log_still_frees_the_segments_of_a_deleted_topic() {
        let dir = tempfile::tempdir().unwrap();
        let io = Arc::new(FailingSync::default());
        let clock = Arc::new(ManualClock::default());
        let (log, _) = CommitLog::open_with_io(dir.path(), config(), clock, io.clone()).unwrap();
        let keep_forever = PartitionConfig {
            retention_ms: None,
            ..PartitionConfig::default()
        };
        let doomed = log.create_partition(pid(0), keep_forever.clone()).unwrap();
        let kept = log.create_partition(pid(1), keep_forever).unwrap();
        for _ in 0..12 {
            block_on(doomed.append(batch(2, 150)).unwrap().durable.wait()).unwrap();
        }
        let mut expected = Vec::new();
        for _ in 0..3 {
            let b = batch(1, 100);
            let out = kept.append(b.clone()).unwrap();
            block_on(out.durable.wait()).unwrap();
            expected.extend(stored(&b, out.base_offset));
        }
        log.inner.write_checkpoint().unwrap();
        // The disk fills: an fsync fails, and the log refuses appends from now on.
        io.fail.store(true, Ordering::SeqCst);
        let lost = kept.append(batch(1, 100)).unwrap();
        assert!(block_on(lost.durable.wait()).is_err());
        io.fail.store(false, Ordering::SeqCst);
        assert!(
            kept.append(batch(1, 10)).is_err(),
            "the log must stay poisoned"
        );

        let before = segment_count(dir.path());
        log.run_maintenance().unwrap();
        assert_eq!(
            segment_count(dir.path()),
            before,
            "nothing is freed for a live topic"
        );
        log.remove_partition(pid(0)).unwrap();
        log.run_maintenance().unwrap();
        let after = segment_count(dir.path());
        assert!(
            after < before - 2,
            "{before} segments before, {after} after"
        );
        assert_eq!(&kept.read(0, 1 << 20).unwrap().records[..], &expected[..]);
        drop((kept, doomed, log));

        // A restart recovers by itself: every acknowledged batch reads back.
        // (The append whose fsync failed was written, so it may come back too,
        // as in Kafka: its producer was told it failed, not that it was lost.)
        let (log, _) =
            CommitLog::open(dir.path(), config(), Arc::new(ManualClock::default())).unwrap();
        assert_eq!(log.partitions(), vec![pid(1)]);
        let p = log.partition(pid(1)).unwrap();
        assert!(p.read(0, 1 << 20).unwrap().records.starts_with(&expected));
        block_on(p.append(batch(1, 10)).unwrap().durable.wait()).unwrap();
        log.shutdown().unwrap();
    }

    #[test]
    fn a_poisoned_log_still_makes_delete_records_durable_and_frees_its_segments() {
        let dir = tempfile::tempdir().unwrap();
        let io = Arc::new(FailingSync::default());
        let clock = Arc::new(ManualClock::default());
        let (log, _) = CommitLog::open_with_io(dir.path(), config(), clock, io.clone()).unwrap();
        let keep_forever = PartitionConfig {
            retention_ms: None,
            ..PartitionConfig::default()
        };
        let big = log.create_partition(pid(0), keep_forever.clone()).unwrap();
        let small = log.create_partition(pid(1), keep_forever).unwrap();
        let mut tail = Vec::new();
        for i in 0..12 {
            let b = batch(2, 150);
            let out = big.append(b.clone()).unwrap();
            block_on(out.durable.wait()).unwrap();
            if i >= 10 {
                tail.extend(stored(&b, out.base_offset));
            }
        }
        let b = batch(1, 100);
        let out = small.append(b.clone()).unwrap();
        block_on(out.durable.wait()).unwrap();
        let small_data = stored(&b, out.base_offset);
        log.inner.write_checkpoint().unwrap();
        io.fail.store(true, Ordering::SeqCst);
        assert!(block_on(small.append(batch(1, 10)).unwrap().durable.wait()).is_err());
        io.fail.store(false, Ordering::SeqCst);

        let before = segment_count(dir.path());
        assert_eq!(big.delete_records_before(20).unwrap(), 20);
        log.run_maintenance().unwrap();
        let after = segment_count(dir.path());
        assert!(
            after < before - 2,
            "{before} segments before, {after} after"
        );
        assert_eq!(&big.read(20, 1 << 20).unwrap().records[..], &tail[..]);
        drop((big, small, log));

        // The move survived: a restart starts the partition at 20.
        let (log, _) =
            CommitLog::open(dir.path(), config(), Arc::new(ManualClock::default())).unwrap();
        let big = log.partition(pid(0)).unwrap();
        assert_eq!(big.offsets().log_start, 20);
        assert_eq!(&big.read(20, 1 << 20).unwrap().records[..], &tail[..]);
        let small = log.partition(pid(1)).unwrap();
        assert!(
            small
                .read(0, 1 << 20)
                .unwrap()
                .records
                .starts_with(&small_data)
        );
        log.shutdown().unwrap();
    }
}
