//! DeleteRecords: moving log-start offsets forward and making the moves
//! durable, one sync and one checkpoint for a whole request.
//!
//! Each partition's log start moves under its own lock; the checkpoint,
//! which records log starts, then makes every move of the request durable at
//! once. A poisoned log cannot write a full checkpoint: it records the log
//! starts alone (`reclaim::checkpoint_log_starts`), once per request too.
//!
//! Also a follower's fresh start past its whole log
//! ([`truncate_fully_and_start_at`]), whose commit point is that checkpoint.

use std::sync::Arc;

use crate::error::{ReadError, StorageError, TruncateError};
use crate::log::lock;
use crate::partition::{self, PartitionInner};
use crate::store::Store;
use crate::{PartitionId, reclaim};

/// Advance each partition's log start to its offset (`-1`: the high
/// watermark), then make the moves durable. Results, in the order of
/// `items`, are the new log-start offsets.
pub(crate) fn delete_records_before(
    store: &Store,
    items: &[(&Arc<PartitionInner>, i64)],
) -> Vec<Result<i64, ReadError>> {
    let _panic = store.panic_guard("DeleteRecords");
    let mut results: Vec<Result<i64, ReadError>> = items
        .iter()
        .map(|(part, offset)| advance(store, part, *offset))
        .collect();
    let moved: Vec<PartitionId> = items
        .iter()
        .zip(&results)
        .filter(|(_, result)| result.is_ok())
        .map(|((part, _), _)| part.id)
        .collect();
    if moved.is_empty() {
        return results;
    }
    match make_durable(store, &moved) {
        Ok(unrecorded) => {
            for ((part, _), result) in items.iter().zip(results.iter_mut()) {
                if result.is_ok() && unrecorded.contains(&part.id) {
                    *result = Err(ReadError::Storage(reclaim::refused(store)));
                }
            }
            store.bump_progress();
        }
        Err(err) => {
            for result in results.iter_mut().filter(|r| r.is_ok()) {
                *result = Err(ReadError::Storage(err.clone()));
            }
        }
    }
    results
}

/// Remove every batch of a partition and start its log at `offset`, at or
/// past its log end (Kafka's `truncateFullyAndStartAt`): a follower whose
/// leader's log start passed its log end. Returns the new log start.
///
/// No log entry is needed: with `offset` at or past the log end every batch
/// lies below the new log start, so the checkpoint that records it is the
/// commit point. Recovery from an older checkpoint finds the old log whole
/// (nothing was cut or written); from the new one, a log that starts and
/// ends at `offset` (`recovery::load_indexes` takes the log end up to the
/// log start), every old batch below it. The epoch cache is trimmed only
/// after that checkpoint, so the leader-epoch file a crash keeps never
/// lacks epochs of a log that came back whole; recovery trims it the same way.
pub(crate) fn truncate_fully_and_start_at(
    store: &Store,
    part: &PartitionInner,
    offset: i64,
) -> Result<i64, TruncateError> {
    let _panic = store.panic_guard("starting a log afresh");
    // No compaction or cleaner moves index entries meanwhile.
    let _one_run = lock(&store.maintenance_lock)?;
    let ix = store.index_io();
    {
        let mut st = lock(&part.state)?;
        if st.removed() {
            return Err(partition::removed_error(part.id).into());
        }
        if offset < st.log_end() {
            return Err(TruncateError::BelowLogEnd {
                offset,
                log_end: st.log_end(),
            });
        }
        if offset == st.log_start() {
            // Already empty and starting there: nothing to move.
            return Ok(offset);
        }
        if let Err(e) = st.start_at(offset, ix) {
            drop(st);
            return Err(store.poison(e.to_string()).into());
        }
        let (first, next) = (st.index().first_slot(), st.index().next_slot());
        store.check(first == next, || {
            format!("a log started afresh at {offset} still indexes slots {first}..{next}")
        })?;
    }
    store.mark_checkpoint_dirty();
    // Every old batch durable before the checkpoint's position, so its tail
    // scan never meets one.
    store.log.sync_now()?;
    store.write_checkpoint()?;
    let mut st = lock(&part.state)?;
    if st.trim_epochs_to_start() {
        // Written by the next checkpoint; until then recovery trims the same.
        store.leader_epochs.mark_dirty();
    }
    drop(st);
    store.bump_progress();
    Ok(offset)
}

/// Move one partition's log start in memory, in steps (see
/// [`partition::LOG_START_STEP_ENTRIES`]); returns the new log start.
fn advance(store: &Store, part: &PartitionInner, offset: i64) -> Result<i64, ReadError> {
    let ix = store.index_io();
    let mut target = None;
    loop {
        let mut st = lock(&part.state)?;
        if st.removed() {
            return Err(ReadError::Storage(partition::removed_error(part.id)));
        }
        // The high watermark of the first step: later steps may not chase it.
        let target = *target.get_or_insert(if offset == -1 { st.hw() } else { offset });
        if target < 0 || target > st.hw() {
            return Err(ReadError::OffsetOutOfRange {
                offset,
                log_start: st.log_start(),
                log_end: st.hw(),
            });
        }
        let step = st.log_start_step(target, ix)?;
        if st.advance_log_start(step, ix)? {
            store.mark_checkpoint_dirty();
        }
        if step >= target || st.log_start() >= target {
            return Ok(st.log_start());
        }
    }
}

/// The checkpoint records log-start offsets: writing it makes the moves
/// durable. Returns the partitions of `moved` whose log start could not be
/// recorded (a poisoned log records only partitions its last checkpoint has).
fn make_durable(store: &Store, moved: &[PartitionId]) -> Result<Vec<PartitionId>, StorageError> {
    if store.log.durable_tx.borrow().poisoned.is_some() {
        // As maintenance does; a lock a panic poisoned is not waited for.
        let _one_run = lock(&store.maintenance_lock);
        return reclaim::checkpoint_log_starts(store, moved);
    }
    store.log.sync_now()?;
    store.write_checkpoint()?;
    Ok(Vec::new())
}

#[cfg(test)]
mod tests {
    use std::fs::File;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::batch::test_batches::batch;
    use crate::io::FileIo;
    use crate::tests::{ManualClock, block_on, open_log, pid};
    use crate::{CommitLog, LogConfig, Partition, PartitionConfig};

    /// Counts fdatasync calls.
    #[derive(Default)]
    struct CountingIo(AtomicUsize);

    impl FileIo for CountingIo {
        fn sync_data(&self, file: &File) -> std::io::Result<()> {
            self.0.fetch_add(1, Ordering::SeqCst);
            file.sync_data()
        }
    }

    /// No periodic checkpoint: only DeleteRecords writes one.
    fn no_checkpoints() -> LogConfig {
        LogConfig {
            index_checkpoint_interval_ms: 3_600_000,
            ..LogConfig::default()
        }
    }

    /// Three partitions of two records each, durable, with a checkpoint
    /// that covers them (so no index file is left to sync).
    fn three_partitions(log: &CommitLog) -> Vec<Partition> {
        let parts: Vec<Partition> = (0..3)
            .map(|n| {
                log.create_partition(pid(n), PartitionConfig::default())
                    .unwrap()
            })
            .collect();
        for p in &parts {
            block_on(p.append(batch(2, 10)).unwrap().durable.wait()).unwrap();
        }
        log.inner.write_checkpoint().unwrap();
        parts
    }

    #[test]
    fn a_request_of_many_partitions_costs_one_checkpoint_and_is_durable() {
        let dir = tempfile::tempdir().unwrap();
        let io = Arc::new(CountingIo::default());
        {
            let (log, _) = CommitLog::open_with_io(
                dir.path(),
                no_checkpoints(),
                Arc::new(ManualClock::default()),
                io.clone(),
            )
            .unwrap();
            let parts = three_partitions(&log);
            let syncs = || io.0.load(Ordering::SeqCst);

            let before = syncs();
            let items: Vec<(Partition, i64)> = parts.iter().map(|p| (p.clone(), 1)).collect();
            let moved = log.delete_records_before_many(&items);
            assert!(moved.iter().all(|r| matches!(r, Ok(1))), "{moved:?}");
            assert_eq!(syncs() - before, 1, "one checkpoint for the request");

            // One partition at a time costs one checkpoint each.
            let before = syncs();
            for p in &parts {
                assert_eq!(p.delete_records_before(2).unwrap(), 2);
            }
            assert_eq!(syncs() - before, parts.len());
            // Crash: no shutdown, no periodic checkpoint.
        }
        let log = open_log(dir.path(), no_checkpoints());
        for n in 0..3 {
            assert_eq!(log.partition(pid(n)).unwrap().offsets().log_start, 2);
        }
        log.shutdown().unwrap();
    }

    #[test]
    fn a_refused_partition_does_not_stop_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let log = open_log(dir.path(), no_checkpoints());
        let parts = three_partitions(&log);
        let items = [
            (parts[0].clone(), -1),
            (parts[1].clone(), 100),
            (parts[2].clone(), 1),
        ];
        let moved = log.delete_records_before_many(&items);
        assert!(matches!(moved[0], Ok(2)), "{moved:?}");
        assert!(
            matches!(
                moved[1],
                Err(ReadError::OffsetOutOfRange { offset: 100, .. })
            ),
            "{moved:?}"
        );
        assert!(matches!(moved[2], Ok(1)), "{moved:?}");
        // Nothing to move at all: no sync, no checkpoint, the same answer.
        assert!(matches!(
            log.delete_records_before_many(&items[1..2])[0],
            Err(ReadError::OffsetOutOfRange { .. })
        ));
        log.shutdown().unwrap();
    }
}
