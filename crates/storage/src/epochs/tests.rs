//! The leader-epoch cache against Kafka's semantics, its file, and the
//! epochs of a partition through the public storage API (reopen, crash,
//! retention, refusals).

use std::fs::File;
use std::path::Path;
use std::sync::atomic::AtomicBool;

use proptest::prelude::*;

use super::*;
use crate::batch::test_batches::batch;
use crate::io::FileIo;
use crate::tests::{ManualClock, block_on, pid};
use crate::{CommitLog, LogConfig, Partition, PartitionConfig};

fn cache(entries: &[(i32, i64)]) -> EpochCache {
    EpochCache::from_entries(
        entries
            .iter()
            .map(|&(epoch, start_offset)| EpochEntry {
                epoch,
                start_offset,
            })
            .collect(),
    )
    .expect("ordered")
}

fn pairs(c: &EpochCache) -> Vec<(i32, i64)> {
    c.entries()
        .iter()
        .map(|e| (e.epoch, e.start_offset))
        .collect()
}

#[test]
fn assign_drops_entries_that_would_break_the_order() {
    let mut c = EpochCache::default();
    assert!(c.assign(0, 0));
    assert!(c.assign(1, 10));
    assert!(c.assign(3, 25));
    // The latest epoch again, at or after its start: nothing to do.
    assert!(!c.assign(3, 25));
    assert!(!c.assign(3, 40));
    // The latest epoch at an earlier offset moves its start back.
    assert!(c.assign(3, 20));
    assert_eq!(pairs(&c), [(0, 0), (1, 10), (3, 20)]);
    // An older epoch replaces every entry at or above it.
    assert!(c.assign(2, 15));
    assert_eq!(pairs(&c), [(0, 0), (1, 10), (2, 15)]);
    // A newer epoch at the same offset as the latest replaces it (no records in between).
    assert!(c.assign(4, 15));
    assert_eq!(pairs(&c), [(0, 0), (1, 10), (4, 15)]);
    // Negative values are never stored.
    assert!(!c.assign(-1, 30));
    assert!(!c.assign(5, -1));
    assert_eq!(pairs(&c), [(0, 0), (1, 10), (4, 15)]);
}

#[test]
fn learning_only_adds_epochs_above_the_latest() {
    let mut c = EpochCache::default();
    assert!(c.learn(0, 0));
    assert!(!c.learn(0, 5), "the same epoch again");
    assert!(!c.learn(-1, 7), "no leader epoch in the batch");
    assert!(c.learn(2, 9));
    assert!(!c.learn(1, 12), "an older epoch never rewrites the cache");
    assert_eq!(pairs(&c), [(0, 0), (2, 9)]);
}

#[test]
fn end_offsets_follow_kafkas_leader_epoch_cache() {
    let c = cache(&[(1, 10), (3, 20), (5, 30)]);
    let log_end = 40;
    // The latest epoch ends at the log end.
    assert_eq!(c.end_offset_for(5, log_end), (5, 40));
    // An older epoch ends where the next larger one starts.
    assert_eq!(c.end_offset_for(3, log_end), (3, 30));
    assert_eq!(c.end_offset_for(1, log_end), (1, 20));
    // An unknown epoch between two known ones: the largest epoch below it.
    assert_eq!(c.end_offset_for(4, log_end), (3, 30));
    assert_eq!(c.end_offset_for(2, log_end), (1, 20));
    // Below every known epoch: the requested epoch, ending at the first start.
    assert_eq!(c.end_offset_for(0, log_end), (0, 10));
    // Above every known epoch, or undefined: (-1, -1).
    assert_eq!(c.end_offset_for(6, log_end), (-1, -1));
    assert_eq!(c.end_offset_for(-1, log_end), (-1, -1));
    assert_eq!(EpochCache::default().end_offset_for(0, 0), (-1, -1));
}

#[test]
fn truncating_from_the_end_forgets_epochs_starting_at_or_after_it() {
    let mut c = cache(&[(0, 0), (1, 10), (3, 20)]);
    assert!(!c.truncate_from_end(25));
    assert!(c.truncate_from_end(20));
    assert_eq!(pairs(&c), [(0, 0), (1, 10)]);
    assert!(c.truncate_from_end(5));
    assert_eq!(pairs(&c), [(0, 0)]);
    assert!(!c.truncate_from_end(-1));
}

#[test]
fn truncating_from_the_start_keeps_the_epoch_covering_it() {
    let original = cache(&[(0, 0), (1, 10), (3, 20)]);
    let mut c = original.clone();
    assert!(c.truncate_from_start(5));
    assert_eq!(pairs(&c), [(0, 5), (1, 10), (3, 20)]);
    let mut c = original.clone();
    assert!(c.truncate_from_start(15));
    assert_eq!(pairs(&c), [(1, 15), (3, 20)]);
    assert!(c.truncate_from_start(20));
    assert_eq!(pairs(&c), [(3, 20)]);
    assert!(!c.truncate_from_start(20), "already there");
    assert!(c.truncate_from_start(99));
    assert_eq!(pairs(&c), [(3, 99)]);
    // Before the first entry there is nothing to cut.
    let mut c = cache(&[(2, 10)]);
    assert!(!c.truncate_from_start(5));
    assert_eq!(pairs(&c), [(2, 10)]);
}

#[test]
fn epoch_of_an_offset_is_that_of_the_last_entry_at_or_before_it() {
    let c = cache(&[(1, 10), (3, 20)]);
    assert_eq!(c.epoch_for_offset(9), None);
    assert_eq!(c.epoch_for_offset(10), Some(1));
    assert_eq!(c.epoch_for_offset(19), Some(1));
    assert_eq!(c.epoch_for_offset(20), Some(3));
    assert_eq!(c.epoch_for_offset(1_000), Some(3));
}

/// One step of a leader's log, for the property test.
#[derive(Debug, Clone)]
enum Op {
    /// Append this many records under the current leader epoch.
    Append(i64),
    /// Raise the leader epoch by this much (0: set the same one again).
    NewEpoch(i32),
    /// Move the log start forward by this fraction (of 8) of the live range.
    Retain(i64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1i64..6).prop_map(Op::Append),
        2 => (0i32..3).prop_map(Op::NewEpoch),
        1 => (0i64..9).prop_map(Op::Retain),
    ]
}

proptest! {
    /// A leader's log driven at random: the cache stays ordered, knows the
    /// epoch of every retained offset, and ends every epoch where the first
    /// record of a larger epoch lies (or at the log end).
    #[test]
    fn the_cache_matches_the_epochs_written_in_the_log(ops in prop::collection::vec(op(), 0..60)) {
        let mut c = EpochCache::default();
        let mut written: Vec<i32> = Vec::new(); // epoch of each offset
        let (mut log_start, mut leader, mut any) = (0i64, 0i32, false);
        for op in ops {
            let log_end = written.len() as i64;
            match op {
                Op::Append(n) => {
                    c.learn(leader, log_end);
                    written.extend(std::iter::repeat_n(leader, n as usize));
                    any = true;
                }
                Op::NewEpoch(bump) => {
                    leader += bump;
                    c.assign(leader, log_end);
                    any = true;
                }
                Op::Retain(eighths) => {
                    log_start += (log_end - log_start) * eighths / 8;
                    c.truncate_from_start(log_start);
                }
            }
            prop_assert!(c.is_ordered(), "{:?}", c);
        }
        let log_end = written.len() as i64;
        for o in log_start..log_end {
            prop_assert_eq!(c.epoch_for_offset(o), Some(written[o as usize]), "offset {}", o);
        }
        for e in 0..=leader + 1 {
            let (found, end) = c.end_offset_for(e, log_end);
            if !any || e > leader {
                prop_assert_eq!((found, end), (-1, -1), "epoch {}", e);
                continue;
            }
            let first_larger = (log_start..log_end).find(|&o| written[o as usize] > e);
            prop_assert_eq!(end, first_larger.unwrap_or(log_end), "epoch {}", e);
            prop_assert!(found <= e, "epoch {} answered as {}", e, found);
        }
    }

    /// The file decodes back to exactly what was encoded.
    #[test]
    fn the_file_round_trips(records in prop::collection::vec(
        (0i32..1_000, 0i32..50, prop::collection::vec((1i32..5, 1i64..1_000), 0..6)), 0..20)
    ) {
        let mut stored = Vec::new();
        for (i, (partition, leader_epoch, steps)) in records.into_iter().enumerate() {
            let mut c = EpochCache::default();
            let (mut epoch, mut offset) = (0, 0);
            for (de, doff) in steps {
                epoch += de;
                offset += doff;
                c.assign(epoch, offset);
            }
            stored.push(StoredEpochs {
                id: PartitionId { topic_id: Uuid::from_u128(i as u128), partition },
                leader_epoch,
                cache: c,
            });
        }
        prop_assert_eq!(decode(&encode(&stored)).unwrap(), stored);
    }
}

#[test]
fn a_damaged_or_newer_file_is_refused() {
    let one = [StoredEpochs {
        id: pid(3),
        leader_epoch: 2,
        cache: cache(&[(0, 0), (2, 7)]),
    }];
    let good = encode(&one);
    let mut flipped = good.clone();
    flipped[HEADER_BYTES + 5] ^= 1;
    assert!(matches!(decode(&flipped), Err(FormatError::Corrupt(_))));
    assert!(matches!(
        decode(&good[..good.len() - 1]),
        Err(FormatError::Corrupt(_))
    ));
    // A count the bytes cannot hold is refused before anything is allocated.
    let mut huge = good[..HEADER_BYTES].to_vec();
    huge[12..16].copy_from_slice(&u32::MAX.to_be_bytes());
    let crc = crc32c::crc32c(&huge);
    huge.extend_from_slice(&crc.to_be_bytes());
    assert!(matches!(decode(&huge), Err(FormatError::Corrupt(_))));
    let mut newer = good.clone();
    newer[8..12].copy_from_slice(&2u32.to_be_bytes());
    assert!(matches!(decode(&newer), Err(FormatError::Unsupported(_))));
}

// ---- Through the storage API ----

/// Checkpoints only when the test asks (shutdown), so what is on disk
/// between two calls is what the test reasons about.
fn config() -> LogConfig {
    LogConfig {
        index_checkpoint_interval_ms: u64::MAX / 4,
        ..LogConfig::default()
    }
}

fn open(dir: &Path) -> CommitLog {
    open_with(dir, Arc::new(crate::io::OsIo))
}

fn open_with(dir: &Path, io: Arc<dyn FileIo>) -> CommitLog {
    CommitLog::open_with_io(dir, config(), Arc::new(ManualClock::default()), io)
        .expect("opens")
        .0
}

fn append(p: &Partition, records: usize) -> i64 {
    let out = p.append(batch(records, 8)).expect("appends");
    block_on(out.durable.wait()).expect("durable");
    out.base_offset
}

/// The `partitionLeaderEpoch` of every batch read from `offset` on.
fn batch_epochs(p: &Partition, offset: i64) -> Vec<(i64, i32)> {
    let read = p.read(offset, 1 << 20).expect("reads");
    let mut out = Vec::new();
    let mut rest = &read.records[..];
    while rest.len() >= 12 {
        let len = be_i32(rest, 8).expect("length") as usize + 12;
        out.push((
            be_i64(rest, 0).expect("base"),
            be_i32(rest, 12).expect("epoch"),
        ));
        rest = &rest[len..];
    }
    out
}

/// A copy of the data directory as a crash would leave it (the log still open).
fn crash_copy(from: &Path) -> tempfile::TempDir {
    fn copy(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for ent in std::fs::read_dir(from).unwrap() {
            let ent = ent.unwrap();
            let target = to.join(ent.file_name());
            if ent.file_type().unwrap().is_dir() {
                copy(&ent.path(), &target);
            } else {
                std::fs::copy(ent.path(), &target).unwrap();
            }
        }
    }
    let to = tempfile::tempdir().unwrap();
    copy(from, to.path());
    to
}

#[test]
fn a_set_leader_epoch_survives_reopen_and_stamps_later_batches() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    let p = log
        .create_partition(pid(0), PartitionConfig::default())
        .unwrap();
    assert_eq!(p.leader_epoch(), 0);
    assert_eq!(
        p.end_offset_for_epoch(0),
        None,
        "no epoch before any append"
    );
    append(&p, 3);
    append(&p, 2);
    assert_eq!(p.end_offset_for_epoch(0), Some((0, 5)));
    p.set_leader_epoch(4).unwrap();
    append(&p, 4);
    // Crash without a checkpoint: the epoch was durable on return.
    let crashed = crash_copy(dir.path());
    log.shutdown().unwrap();

    for d in [dir.path(), crashed.path()] {
        let log = open(d);
        let p = log.partition(pid(0)).unwrap();
        assert_eq!(p.leader_epoch(), 4);
        assert_eq!(
            p.end_offset_for_epoch(0),
            Some((0, 5)),
            "epoch 0 ends where 4 began"
        );
        assert_eq!(
            p.end_offset_for_epoch(2),
            Some((0, 5)),
            "an unknown epoch between"
        );
        assert_eq!(p.end_offset_for_epoch(4), Some((4, 9)));
        assert_eq!(p.end_offset_for_epoch(5), None);
        assert_eq!(p.epoch_for_offset(4), Some(0));
        assert_eq!(p.epoch_for_offset(5), Some(4));
        // Batches appended after the reopen carry the epoch too.
        assert_eq!(append(&p, 1), 9);
        assert_eq!(batch_epochs(&p, 0), [(0, 0), (3, 0), (5, 4), (9, 4)]);
        log.shutdown().unwrap();
    }
}

#[test]
fn an_epoch_set_before_any_new_batch_still_ends_the_previous_one_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    let p = log
        .create_partition(pid(0), PartitionConfig::default())
        .unwrap();
    append(&p, 6);
    p.set_leader_epoch(1).unwrap();
    p.set_leader_epoch(2).unwrap();
    log.shutdown().unwrap();
    let log = open(dir.path());
    let p = log.partition(pid(0)).unwrap();
    assert_eq!(p.leader_epoch(), 2);
    assert_eq!(p.end_offset_for_epoch(0), Some((0, 6)));
    assert_eq!(
        p.end_offset_for_epoch(1),
        Some((0, 6)),
        "epoch 1 wrote nothing"
    );
    assert_eq!(p.end_offset_for_epoch(2), Some((2, 6)));
    log.shutdown().unwrap();
}

#[test]
fn an_older_or_negative_epoch_is_refused_and_the_same_one_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    let p = log
        .create_partition(pid(0), PartitionConfig::default())
        .unwrap();
    p.set_leader_epoch(3).unwrap();
    assert!(matches!(
        p.set_leader_epoch(2),
        Err(EpochError::Stale {
            epoch: 2,
            current: 3
        })
    ));
    assert!(matches!(
        p.set_leader_epoch(-1),
        Err(EpochError::Invalid { epoch: -1 })
    ));
    let file = dir.path().join(LEADER_EPOCHS_FILE);
    let before = std::fs::metadata(&file).unwrap().modified().unwrap();
    let bytes = std::fs::read(&file).unwrap();
    p.set_leader_epoch(3).unwrap();
    assert_eq!(std::fs::read(&file).unwrap(), bytes);
    assert_eq!(
        std::fs::metadata(&file).unwrap().modified().unwrap(),
        before
    );
    assert_eq!(p.leader_epoch(), 3);
    log.shutdown().unwrap();
}

#[test]
fn a_crash_before_the_file_is_replaced_relearns_the_epoch_from_the_log_tail() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    let p = log
        .create_partition(pid(0), PartitionConfig::default())
        .unwrap();
    append(&p, 2);
    p.set_leader_epoch(1).unwrap();
    let file = dir.path().join(LEADER_EPOCHS_FILE);
    let before = std::fs::read(&file).unwrap();
    p.set_leader_epoch(2).unwrap();
    // An append acknowledged under epoch 2 ...
    append(&p, 3);
    // ... and a crash that kept the file as it was before the epoch (its
    // rename never reached the disk): the batch in the tail tells.
    let crashed = crash_copy(dir.path());
    std::fs::write(crashed.path().join(LEADER_EPOCHS_FILE), &before).unwrap();
    let log2 = open(crashed.path());
    let p2 = log2.partition(pid(0)).unwrap();
    assert_eq!(p2.leader_epoch(), 2);
    assert_eq!(p2.epoch_for_offset(2), Some(2));
    // Epoch 1 wrote nothing: its entry gave way to 2 at the same offset.
    assert_eq!(p2.end_offset_for_epoch(1), Some((0, 2)));
    assert_eq!(p2.end_offset_for_epoch(2), Some((2, 5)));
    log2.shutdown().unwrap();
    // The checkpoint after recovery wrote what the scan learned.
    let stored = load(crashed.path(), &crate::io::OsIo).unwrap();
    assert_eq!(pairs(&stored[&pid(0)].cache), [(0, 0), (2, 2)]);
    log.shutdown().unwrap();
}

#[test]
fn a_log_written_before_leader_epochs_were_kept_is_all_epoch_zero() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    let p = log
        .create_partition(pid(0), PartitionConfig::default())
        .unwrap();
    append(&p, 2);
    append(&p, 2);
    log.shutdown().unwrap();
    // What an older build leaves: no leader-epoch file.
    std::fs::remove_file(dir.path().join(LEADER_EPOCHS_FILE)).unwrap();
    let log = open(dir.path());
    let p = log.partition(pid(0)).unwrap();
    assert_eq!(p.epoch_for_offset(0), Some(0));
    assert_eq!(p.end_offset_for_epoch(0), Some((0, 4)));
    log.shutdown().unwrap();
}

#[test]
fn moving_the_log_start_keeps_the_epoch_covering_it() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    let p = log
        .create_partition(pid(0), PartitionConfig::default())
        .unwrap();
    append(&p, 5);
    p.set_leader_epoch(1).unwrap();
    append(&p, 5);
    p.set_leader_epoch(2).unwrap();
    append(&p, 5);
    assert_eq!(p.delete_records_before(7).unwrap(), 7);
    assert_eq!(p.epoch_for_offset(7), Some(1));
    // Epoch 0 is gone: it ends where the first epoch kept starts (Kafka).
    assert_eq!(p.end_offset_for_epoch(0), Some((0, 7)));
    assert_eq!(p.end_offset_for_epoch(1), Some((1, 10)));
    log.shutdown().unwrap();
    let stored = load(dir.path(), &crate::io::OsIo).unwrap();
    assert_eq!(pairs(&stored[&pid(0)].cache), [(1, 7), (2, 10)]);
    let log = open(dir.path());
    let p = log.partition(pid(0)).unwrap();
    assert_eq!(p.end_offset_for_epoch(1), Some((1, 10)));
    assert_eq!(p.end_offset_for_epoch(2), Some((2, 15)));
    log.shutdown().unwrap();
}

#[test]
fn a_removed_partition_leaves_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    for n in 0..2 {
        let p = log
            .create_partition(pid(n), PartitionConfig::default())
            .unwrap();
        p.set_leader_epoch(1).unwrap();
    }
    log.remove_partition(pid(0)).unwrap();
    log.shutdown().unwrap();
    let stored = load(dir.path(), &crate::io::OsIo).unwrap();
    assert_eq!(stored.keys().copied().collect::<Vec<_>>(), [pid(1)]);
}

#[test]
fn a_newer_leader_epoch_file_refuses_the_start_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    let p = log
        .create_partition(pid(0), PartitionConfig::default())
        .unwrap();
    append(&p, 1);
    p.set_leader_epoch(1).unwrap();
    log.shutdown().unwrap();
    let file = dir.path().join(LEADER_EPOCHS_FILE);
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[8..12].copy_from_slice(&2u32.to_be_bytes());
    std::fs::write(&file, &bytes).unwrap();
    let before = crash_copy(dir.path());
    let err = CommitLog::open(dir.path(), config(), Arc::new(ManualClock::default())).unwrap_err();
    assert!(
        matches!(err, StorageError::UnsupportedFormat { .. }),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("leader-epoch file format version 2"),
        "{err}"
    );
    for name in [LEADER_EPOCHS_FILE, crate::store::CHECKPOINT_FILE] {
        assert_eq!(
            std::fs::read(dir.path().join(name)).unwrap(),
            std::fs::read(before.path().join(name)).unwrap(),
            "{name} changed"
        );
    }
}

/// File I/O whose fdatasync fails once `fail` is set.
#[derive(Default)]
struct FailingSync {
    fail: AtomicBool,
}

impl FileIo for FailingSync {
    fn sync_data(&self, file: &File) -> std::io::Result<()> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(std::io::Error::from_raw_os_error(5));
        }
        file.sync_data()
    }
}

#[test]
fn a_failed_write_of_the_file_poisons_the_log_and_keeps_the_old_file() {
    let dir = tempfile::tempdir().unwrap();
    let io = Arc::new(FailingSync::default());
    let log = open_with(dir.path(), io.clone());
    let p = log
        .create_partition(pid(0), PartitionConfig::default())
        .unwrap();
    append(&p, 2);
    p.set_leader_epoch(1).unwrap();
    io.fail.store(true, Ordering::SeqCst);
    let err = p.set_leader_epoch(2).unwrap_err();
    assert!(matches!(err, EpochError::Storage(_)), "{err}");
    assert!(p.append(batch(1, 8)).is_err(), "the log refuses writes");
    drop(log);
    let log = open(dir.path());
    let p = log.partition(pid(0)).unwrap();
    assert_eq!(
        p.leader_epoch(),
        1,
        "the epoch that was not durable is gone"
    );
    assert_eq!(p.end_offset_for_epoch(0), Some((0, 2)));
    log.shutdown().unwrap();
}

#[test]
fn the_checkpoint_writes_learned_epochs_before_it_vouches_for_their_batches() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    let p = log
        .create_partition(pid(0), PartitionConfig::default())
        .unwrap();
    append(&p, 3);
    // The checkpoint moves past the batch: recovery will not scan it again.
    log.inner.write_checkpoint().unwrap();
    let crashed = crash_copy(dir.path());
    let log2 = open(crashed.path());
    let p2 = log2.partition(pid(0)).unwrap();
    assert_eq!(p2.epoch_for_offset(0), Some(0));
    assert_eq!(p2.end_offset_for_epoch(0), Some((0, 3)));
    log2.shutdown().unwrap();
    log.shutdown().unwrap();
}

#[test]
fn several_partitions_move_epoch_with_one_write_of_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    let parts: Vec<Partition> = (0..3)
        .map(|n| {
            log.create_partition(pid(n), PartitionConfig::default())
                .unwrap()
        })
        .collect();
    append(&parts[0], 2);
    parts[2].set_leader_epoch(5).unwrap();
    let file = dir.path().join(LEADER_EPOCHS_FILE);
    // The file is replaced by a rename: a new inode each write.
    let inode = || std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&file).unwrap());
    let before = inode();
    let results = log.set_leader_epochs(&[
        (parts[0].clone(), 1),
        (parts[1].clone(), 2),
        (parts[2].clone(), 4),
    ]);
    assert!(results[0].is_ok() && results[1].is_ok());
    assert!(matches!(
        results[2],
        Err(EpochError::Stale {
            epoch: 4,
            current: 5
        })
    ));
    assert_ne!(inode(), before, "the file was written");
    log.shutdown().unwrap();
    let stored = load(dir.path(), &crate::io::OsIo).unwrap();
    assert_eq!(pairs(&stored[&pid(0)].cache), [(0, 0), (1, 2)]);
    assert_eq!(stored[&pid(1)].leader_epoch, 2);
    assert_eq!(stored[&pid(2)].leader_epoch, 5);
    // Nothing changed: nothing is written.
    let log = open(dir.path());
    let same: Vec<(Partition, i32)> = (0..3)
        .map(|n| (log.partition(pid(n)).unwrap(), [1, 2, 5][n as usize]))
        .collect();
    let before = std::fs::read(&file).unwrap();
    let mtime = std::fs::metadata(&file).unwrap().modified().unwrap();
    assert!(log.set_leader_epochs(&same).iter().all(Result::is_ok));
    assert_eq!(std::fs::read(&file).unwrap(), before);
    assert_eq!(std::fs::metadata(&file).unwrap().modified().unwrap(), mtime);
    log.shutdown().unwrap();
}
