//! Giving disk space back while the log is poisoned (a write or fsync
//! failed, typically because the disk is full): appends stay refused until a
//! restart, but the segments that hold only batches of deleted topics can
//! still be removed, so an operator can make room by deleting a topic.
//!
//! The usual order (checkpoint, then delete) cannot be followed, because a
//! poisoned log writes no checkpoint, and index positions moved by a failed
//! maintenance run may not be durable. So liveness is decided from what
//! recovery itself would read: the segment's own entry headers on disk, the
//! partitions that still have an index file, and the last checkpoint on disk.
//! A segment is removed only when it ends at or before that checkpoint's
//! position (so a restart never scans across the hole it leaves) and every
//! entry in it belongs to a partition whose index file is gone (so no
//! restart can look for a batch in it).

use std::collections::HashSet;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use crate::PartitionId;
use crate::error::StorageError;
use crate::format::{self, ENTRY_HEADER_BYTES};
use crate::log::{CHECKPOINT_FILE, LogInner, Segment, io_err, lock, read, sync_dir};

/// Remove the closed segments, below the last durable checkpoint, that hold
/// nothing but entries of removed partitions. Returns how many were removed.
pub(crate) fn segments_of_removed_partitions(log: &LogInner) -> Result<usize, StorageError> {
    let Some(checkpoint) = crate::recovery::load_checkpoint(&log.dir.join(CHECKPOINT_FILE))? else {
        return Ok(0);
    };
    // The unlinks of removed partitions' index files must be durable before
    // their batches' segments go: recovery finds partitions by index file.
    sync_dir(&log.index_dir)
        .map_err(|e| io_err(format!("fsync of {}", log.index_dir.display()), e))?;
    let registered: HashSet<PartitionId> = read(&log.registry).keys().copied().collect();
    let removed = |id: PartitionId| {
        !registered.contains(&id) && !crate::recovery::index_path(&log.index_dir, id).exists()
    };
    let active = lock(&log.writer).active.base;
    let closed: Vec<(Arc<Segment>, u64)> = {
        let segs = read(&log.segments);
        let bases: Vec<u64> = segs.keys().copied().collect();
        bases
            .windows(2)
            .filter_map(|w| Some((segs.get(&w[0])?.clone(), w[1])))
            .filter(|(s, end)| s.base != active && *end <= checkpoint.position)
            .collect()
    };
    let mut dead = Vec::new();
    for (seg, end) in closed {
        if holds_only(&seg, end, &removed) {
            dead.push(seg.base);
        }
    }
    crate::maintenance::delete_segments(log, &dead)?;
    if !dead.is_empty() {
        tracing::warn!(
            segments = dead.len(),
            "the commit log is poisoned (appends are refused until restart); removed segments \
             that held only deleted topics' data"
        );
    }
    Ok(dead.len())
}

/// Whether every entry of `seg` (which ends at log position `end`) belongs
/// to a partition for which `removed` holds. Any entry that cannot be read
/// or decoded keeps the segment.
fn holds_only(seg: &Segment, end: u64, removed: &dyn Fn(PartitionId) -> bool) -> bool {
    let mut pos = seg.base;
    let mut header = [0u8; ENTRY_HEADER_BYTES];
    while pos < end {
        if seg
            .file
            .read_exact_at(&mut header, seg.file_offset(pos))
            .is_err()
        {
            return false;
        }
        let Some(h) = format::decode_entry_header(&header) else {
            return false;
        };
        if !removed(h.partition) {
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
}
