//! Transactions in one partition: the last stable offset, markers, the
//! aborted transactions a read_committed read names, and how all of it
//! survives restarts, truncations, replication, log-start moves and
//! compaction.

use std::path::Path;

use bytes::Bytes;
use kafka_protocol::records::{Compression, Record, TimestampType};

use crate::batch::test_batches::{batch, encode};
use crate::tests::{block_on, open_log, pid};
use crate::*;

/// A batch of `count` records with keys `key0..`, from `producer` (id,
/// epoch, first sequence), transactional or not.
pub(crate) fn producer_batch(
    count: usize,
    producer: (i64, i16, i32),
    transactional: bool,
    key: &str,
) -> Bytes {
    let (id, epoch, seq) = producer;
    let records: Vec<Record> = (0..count)
        .map(|i| Record {
            transactional,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: id,
            producer_epoch: epoch,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: seq + i as i32,
            timestamp: 1_000 + i as i64,
            key: Some(Bytes::from(format!("{key}{i}"))),
            value: Some(Bytes::from(format!("{key}-value-{i}"))),
            headers: Default::default(),
        })
        .collect();
    encode(&records, Compression::None)
}

fn txn(count: usize, producer: (i64, i16, i32)) -> Bytes {
    producer_batch(count, producer, true, "t")
}

/// Append and wait until the high watermark passes it; returns the base offset.
fn append(p: &Partition, b: Bytes) -> i64 {
    let out = p.append(b).unwrap();
    let base = out.base_offset;
    block_on(out.committed.wait()).unwrap();
    base
}

fn mark(p: &Partition, producer: i64, epoch: i16, commit: bool, coordinator_epoch: i32) -> i64 {
    let out = p
        .append_marker(
            producer,
            epoch,
            TxnMarker {
                commit,
                coordinator_epoch,
            },
        )
        .unwrap();
    let base = out.base_offset;
    block_on(out.committed.wait()).unwrap();
    base
}

/// The base offsets of the batches a read returned.
fn bases(records: &Bytes) -> Vec<i64> {
    batches(records).map(|b| b.unwrap().0.base_offset).collect()
}

fn aborted(producer_id: i64, first: i64, last: i64, lso: i64) -> AbortedTxn {
    AbortedTxn {
        producer_id,
        first_offset: first,
        last_offset: last,
        last_stable_offset: lso,
    }
}

fn open(dir: &Path) -> (CommitLog, Partition) {
    let log = open_log(dir, LogConfig::default());
    let p = log
        .create_partition(pid(0), PartitionConfig::default())
        .unwrap();
    (log, p)
}

#[test]
fn an_open_transaction_holds_the_last_stable_offset_and_its_marker_releases_it() {
    let dir = tempfile::tempdir().unwrap();
    let (_log, p) = open(dir.path());
    append(&p, batch(2, 10)); // 0..=1
    assert_eq!(append(&p, txn(3, (7, 0, 0))), 2); // 2..=4
    append(&p, batch(1, 10)); // 5
    let o = p.offsets();
    assert_eq!((o.high_watermark, o.last_stable), (6, 2));

    let committed = p.read_committed(0, 1 << 20).unwrap();
    assert_eq!(bases(&committed.records), vec![0]);
    assert!(committed.aborted.is_empty());
    assert_eq!(committed.offsets.last_stable, 2);
    // Between the last stable offset and the high watermark: nothing yet,
    // and not out of range.
    assert!(p.read_committed(4, 1 << 20).unwrap().records.is_empty());
    assert!(matches!(
        p.read_committed(7, 1 << 20),
        Err(ReadError::OffsetOutOfRange { .. })
    ));
    assert_eq!(bases(&p.read(0, 1 << 20).unwrap().records), vec![0, 2, 5]);

    assert_eq!(mark(&p, 7, 0, false, 3), 6);
    let o = p.offsets();
    assert_eq!((o.high_watermark, o.last_stable), (7, 7));
    let all = p.read_committed(0, 1 << 20).unwrap();
    assert_eq!(bases(&all.records), vec![0, 2, 5, 6]);
    assert_eq!(all.aborted, vec![aborted(7, 2, 6, 7)]);
    // A read past the transaction's records still names it (its marker is
    // in range); one past the marker does not.
    assert_eq!(p.read_committed(5, 1 << 20).unwrap().aborted.len(), 1);
    assert!(p.read_committed(7, 1 << 20).unwrap().records.is_empty());

    // A committed transaction is never named.
    assert_eq!(append(&p, txn(2, (7, 0, 3))), 7);
    assert_eq!(p.offsets().last_stable, 7);
    assert_eq!(mark(&p, 7, 0, true, 3), 9);
    assert_eq!(p.offsets().last_stable, 10);
    let later = p.read_committed(7, 1 << 20).unwrap();
    assert_eq!(bases(&later.records), vec![7, 9]);
    assert!(later.aborted.is_empty());
}

#[test]
fn transactions_interleaved_over_producers_release_in_first_offset_order() {
    let dir = tempfile::tempdir().unwrap();
    let (_log, p) = open(dir.path());
    append(&p, txn(1, (1, 0, 0))); // 0
    append(&p, txn(1, (2, 0, 0))); // 1
    append(&p, txn(1, (1, 0, 1))); // 2
    assert_eq!(p.offsets().last_stable, 0);
    mark(&p, 2, 0, false, 0); // 3: producer 2 aborted, producer 1 still open
    assert_eq!(p.offsets().last_stable, 0);
    mark(&p, 1, 0, true, 0); // 4
    assert_eq!(p.offsets().last_stable, 5);
    let r = p.read_committed(0, 1 << 20).unwrap();
    // Producer 1 was still open at 0 when producer 2's abort was written.
    assert_eq!(r.aborted, vec![aborted(2, 1, 3, 0)]);
    // The earliest entry that could matter for a read that ends at 1: the
    // abort of producer 2 began at 1, so it is not named.
    assert!(p.read_committed(0, 1).unwrap().aborted.is_empty());
    let open = p.producers();
    assert_eq!(open.len(), 2);
    assert!(open.iter().all(|s| s.txn_start_offset.is_none()));
}

#[test]
fn misuse_of_a_transaction_gets_kafkas_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (_log, p) = open(dir.path());
    append(&p, txn(2, (7, 1, 0)));
    // A plain batch from a producer in a transaction.
    assert!(matches!(
        p.append(producer_batch(1, (7, 1, 2), false, "p")),
        Err(AppendError::InvalidTxnState { producer_id: 7, .. })
    ));
    // A transactional batch that names no producer.
    assert!(matches!(
        p.append(producer_batch(1, (-1, -1, -1), true, "p")),
        Err(AppendError::InvalidTxnState { .. })
    ));
    // A marker of an older producer epoch, then of an older coordinator.
    let marker = |epoch, coordinator_epoch| {
        p.append_marker(
            7,
            epoch,
            TxnMarker {
                commit: true,
                coordinator_epoch,
            },
        )
    };
    assert!(matches!(
        marker(0, 5),
        Err(AppendError::InvalidProducerEpoch {
            current: 1,
            got: 0,
            ..
        })
    ));
    mark(&p, 7, 1, true, 5);
    assert!(matches!(
        marker(1, 4),
        Err(AppendError::CoordinatorFenced {
            current: 5,
            got: 4,
            ..
        })
    ));
    // Nothing refused was written.
    assert_eq!(p.offsets().log_end, 3);
    assert_eq!(p.producers()[0].coordinator_epoch, 5);
}

/// Producer 1's transaction open at 1; producer 2's aborted at 2..=3 with
/// its marker at 4; producer 3 idempotent at 5..=6.
fn two_transactions(p: &Partition) {
    append(p, batch(1, 10)); // 0
    append(p, txn(1, (1, 0, 0))); // 1
    append(p, txn(2, (2, 0, 0))); // 2..=3
    mark(p, 2, 0, false, 0); // 4
    append(p, producer_batch(2, (3, 0, 0), false, "i")); // 5..=6
}

fn assert_two_transactions(p: &Partition) {
    let o = p.offsets();
    assert_eq!((o.log_end, o.last_stable), (7, 1));
    // Producer 1 commits after the restart: everything becomes stable, and
    // producer 2's abort is still named.
    assert_eq!(mark(p, 1, 0, true, 0), 7);
    assert_eq!(p.offsets().last_stable, 8);
    let r = p.read_committed(0, 1 << 20).unwrap();
    assert_eq!(r.aborted, vec![aborted(2, 2, 4, 1)]);
    // Producer 3's sequence carries on; a gap is refused.
    assert!(matches!(
        p.append(producer_batch(1, (3, 0, 4), false, "i")),
        Err(AppendError::OutOfOrderSequence { expected: 2, .. })
    ));
    append(p, producer_batch(1, (3, 0, 2), false, "i"));
}

#[test]
fn transactions_survive_a_clean_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (log, p) = open(dir.path());
    two_transactions(&p);
    log.shutdown().unwrap();
    drop((log, p));
    // The shutdown snapshotted producer state.
    let snaps = std::fs::read_dir(dir.path().join("producer-state"))
        .unwrap()
        .count();
    assert_eq!(snaps, 1);
    let log = open_log(dir.path(), LogConfig::default());
    assert_two_transactions(&log.partition(pid(0)).unwrap());
}

#[test]
fn transactions_survive_a_crash_with_the_abort_before_or_after_the_checkpoint() {
    for checkpoint_after in [0usize, 3, 4, 5] {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig {
            index_checkpoint_interval_ms: u64::MAX,
            ..LogConfig::default()
        };
        let log = open_log(dir.path(), config.clone());
        let p = log
            .create_partition(pid(0), PartitionConfig::default())
            .unwrap();
        // Step n of `two_transactions`, then a checkpoint, then the rest.
        let steps: [&dyn Fn(&Partition); 5] = [
            &|p| {
                append(p, batch(1, 10));
            },
            &|p| {
                append(p, txn(1, (1, 0, 0)));
            },
            &|p| {
                append(p, txn(2, (2, 0, 0)));
            },
            &|p| {
                mark(p, 2, 0, false, 0);
            },
            &|p| {
                append(p, producer_batch(2, (3, 0, 0), false, "i"));
            },
        ];
        for (i, step) in steps.iter().enumerate() {
            if i == checkpoint_after {
                log.inner.write_checkpoint().unwrap();
            }
            step(&p);
        }
        // A crash: no shutdown, so the open scans the tail past the checkpoint.
        drop((log, p));
        let log = open_log(dir.path(), config);
        assert_two_transactions(&log.partition(pid(0)).unwrap());
    }
}

#[test]
fn producer_state_outlives_a_log_start_move_past_its_batches() {
    let dir = tempfile::tempdir().unwrap();
    let (log, p) = open(dir.path());
    append(&p, producer_batch(5, (9, 0, 0), false, "i")); // 0..=4, sequences 0..=4
    append(&p, txn(2, (4, 0, 0))); // 5..=6, open
    append(&p, batch(3, 10)); // 7..=9
    assert_eq!(p.delete_records_before(10).unwrap(), 10);
    // The open transaction's records are gone; it holds the last stable
    // offset at the log start.
    assert_eq!(p.offsets().last_stable, 10);
    log.inner.write_checkpoint().unwrap();
    drop((log, p));
    let log = open_log(dir.path(), LogConfig::default());
    let p = log.partition(pid(0)).unwrap();
    // Without the snapshot, both producers would be forgotten: producer 9
    // would be accepted at any sequence, and producer 4's transaction
    // would not be open.
    assert!(matches!(
        p.append(producer_batch(1, (9, 0, 7), false, "i")),
        Err(AppendError::OutOfOrderSequence { expected: 5, .. })
    ));
    append(&p, producer_batch(1, (9, 0, 5), false, "i")); // 10
    assert_eq!(p.open_transaction(4), Some(5));
    assert_eq!(p.offsets().last_stable, 10);
    mark(&p, 4, 0, true, 0); // 11
    assert_eq!(p.offsets().last_stable, 12);
}

#[test]
fn a_truncation_reopens_a_transaction_whose_marker_it_cut_and_forgets_one_it_cut_whole() {
    let dir = tempfile::tempdir().unwrap();
    let (_log, p) = open(dir.path());
    two_transactions(&p);
    // Cut producer 2's abort marker: its transaction is open again.
    assert_eq!(p.truncate_to(4).unwrap(), 4);
    assert!(p.read_committed(0, 1 << 20).unwrap().aborted.is_empty());
    assert_eq!(p.open_transaction(2), Some(2));
    assert_eq!(p.offsets().last_stable, 1);
    // Cut both transactions whole: nothing is open.
    assert_eq!(p.truncate_to(1).unwrap(), 1);
    assert_eq!(p.open_transaction(1), None);
    assert_eq!(p.open_transaction(2), None);
    assert_eq!(p.offsets().last_stable, 1);
}

#[test]
fn a_follower_copies_markers_and_names_the_same_aborts() {
    let dir = tempfile::tempdir().unwrap();
    let (_log, leader) = open(dir.path());
    two_transactions(&leader);
    mark(&leader, 1, 0, false, 2); // 7
    let fdir = tempfile::tempdir().unwrap();
    let (_flog, follower) = open(fdir.path());
    let copied = leader.read_replica(0, 1 << 20).unwrap().records;
    let out = follower.append_replica(copied).unwrap();
    block_on(out.committed.wait()).unwrap();
    let (l, f) = (
        leader.read_committed(0, 1 << 20).unwrap(),
        follower.read_committed(0, 1 << 20).unwrap(),
    );
    assert_eq!(f.aborted, l.aborted);
    assert_eq!(f.aborted.len(), 2);
    assert_eq!(f.offsets.last_stable, l.offsets.last_stable);
    assert_eq!(follower.producers(), leader.producers());
}

#[test]
fn compaction_drops_aborted_records_and_never_loses_a_committed_value_to_one() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path(), LogConfig::default());
    let config = PartitionConfig {
        retention_ms: None,
        compact: true,
        ..PartitionConfig::default()
    };
    let p = log.create_partition(pid(0), config).unwrap();
    // Key "k0" committed, then written again by an aborted transaction,
    // then by an open one (which must not be compacted).
    append(&p, producer_batch(1, (-1, -1, -1), false, "k")); // 0
    append(&p, producer_batch(1, (5, 0, 0), true, "k")); // 1
    mark(&p, 5, 0, false, 0); // 2
    append(&p, producer_batch(1, (6, 0, 0), true, "k")); // 3
    append(&p, producer_batch(1, (-1, -1, -1), false, "z")); // 4
    log.run_maintenance().unwrap();
    // The aborted batch went (it was not its producer's last: the marker
    // is); the committed value stays, and nothing at or past the last
    // stable offset (3) was touched.
    assert_eq!(
        bases(&p.read(0, 1 << 20).unwrap().records),
        vec![0, 2, 3, 4]
    );
    let r = p.read_committed(0, 1 << 20).unwrap();
    assert_eq!(bases(&r.records), vec![0, 2]);
    assert_eq!(r.aborted, vec![aborted(5, 1, 2, 3)]);
}

#[test]
fn snapshots_are_taken_as_batches_accumulate_and_the_superseded_ones_removed() {
    let dir = tempfile::tempdir().unwrap();
    let (log, p) = open(dir.path());
    let snaps = || {
        let mut names: Vec<String> = std::fs::read_dir(dir.path().join("producer-state"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    };
    let mut seq = 0;
    let mut fill = |n: usize| {
        let mut last = None;
        for _ in 0..n {
            last = Some(
                p.append(producer_batch(1, (3, 0, seq), false, "s"))
                    .unwrap(),
            );
            seq += 1;
        }
        block_on(last.unwrap().committed.wait()).unwrap();
    };
    fill(100);
    log.inner.write_checkpoint().unwrap();
    assert!(snaps().is_empty(), "not due yet: {:?}", snaps());
    fill(8_192);
    log.inner.write_checkpoint().unwrap();
    assert_eq!(snaps().len(), 1);
    assert!(snaps()[0].ends_with("-00000000000000008292.snap"));
    fill(8_192);
    log.inner.write_checkpoint().unwrap();
    // The newer one is vouched for at once (everything was durable): the
    // older one goes.
    let names = snaps();
    assert_eq!(names.len(), 1, "{names:?}");
    assert!(names[0].ends_with("-00000000000000016484.snap"));
}

#[test]
fn a_snapshot_or_aborted_transaction_file_of_a_newer_version_refuses_the_open() {
    for (folder, name, magic) in [
        (
            "producer-state",
            format!(
                "{}-0-00000000000000000003.snap",
                pid(0).topic_id.hyphenated()
            ),
            crate::producer::SNAPSHOT_MAGIC,
        ),
        (
            "txn-index",
            format!("{}-0.txn", pid(0).topic_id.hyphenated()),
            crate::aborted::TXN_INDEX_MAGIC,
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let (log, p) = open(dir.path());
        two_transactions(&p);
        log.shutdown().unwrap();
        drop((log, p));
        let mut newer = magic.to_vec();
        newer.extend_from_slice(&99u32.to_be_bytes());
        newer.resize(64, 0);
        let file = dir.path().join(folder).join(&name);
        std::fs::write(&file, &newer).unwrap();
        let before = std::fs::read(dir.path().join("checkpoint")).unwrap();
        let err = CommitLog::open(
            dir.path(),
            LogConfig::default(),
            std::sync::Arc::new(crate::tests::ManualClock::default()),
        )
        .unwrap_err();
        assert!(
            matches!(&err, StorageError::UnsupportedFormat { detail, .. } if detail.contains("version 99")),
            "{folder}: {err}"
        );
        assert_eq!(
            std::fs::read(&file).unwrap(),
            newer,
            "{folder}: left as it was"
        );
        assert_eq!(
            std::fs::read(dir.path().join("checkpoint")).unwrap(),
            before
        );
    }
}
