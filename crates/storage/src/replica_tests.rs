//! Truncation and the replica append path against a model: whatever the
//! order of client appends, replica appends (offsets given, gaps allowed),
//! truncations, DeleteRecords, fresh starts past the log end, clean reopens
//! and crashes (the log dropped
//! without a shutdown), every offset reads back the batch the model says,
//! and no truncated batch ever comes back.

use proptest::prelude::*;

use bytes::Bytes;
use kafka_protocol::records::Compression;

use crate::batch::test_batches::batch_with;
use crate::tests::{block_on, pid, stored};
use crate::*;

#[derive(Debug, Clone)]
enum Op {
    /// A client append of a batch of `count` records.
    Append { count: usize },
    /// A replica append of `count` records starting `gap` offsets past the log end.
    Replica { count: usize, gap: i64 },
    /// Truncate to this fraction (per mille) of the range from the log start to the log end.
    Truncate { per_mille: i64 },
    /// DeleteRecords to this fraction of the same range.
    Delete { per_mille: i64 },
    /// Remove every batch and start the log `gap` offsets past the log end.
    StartAt { gap: i64 },
    /// Shut down cleanly and reopen.
    Reopen,
    /// Drop the log without a shutdown (no final checkpoint) and reopen.
    Crash,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1usize..4).prop_map(|count| Op::Append { count }),
        3 => (1usize..4, 0i64..3).prop_map(|(count, gap)| Op::Replica { count, gap }),
        2 => (0i64..1_000).prop_map(|per_mille| Op::Truncate { per_mille }),
        1 => (0i64..1_000).prop_map(|per_mille| Op::Delete { per_mille }),
        1 => (0i64..5).prop_map(|gap| Op::StartAt { gap }),
        1 => Just(Op::Reopen),
        2 => Just(Op::Crash),
    ]
}

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 4_096,
        index_checkpoint_interval_ms: 3_600_000,
        // Nearly every look-up goes to the index file.
        index_memory_bytes: 0,
        ..LogConfig::default()
    }
}

fn open(dir: &std::path::Path) -> CommitLog {
    CommitLog::open(dir, config(), std::sync::Arc::new(SystemClock))
        .unwrap()
        .0
}

/// A batch of `count` records, its values naming `tag` so every batch differs.
fn tagged(count: usize, tag: usize) -> Bytes {
    batch_with(count, 3 + tag % 7, &[], Compression::None, None)
}

/// The same batch as a leader stored it at `base` with leader epoch 5.
fn as_leader_stored(b: &Bytes, base: i64) -> Bytes {
    let mut v = b.to_vec();
    crate::batch::patch_offsets(&mut v, base, 5);
    Bytes::from(v)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn truncation_and_replica_appends_match_a_model_across_crashes(
        ops in proptest::collection::vec(op(), 1..80),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut log = open(dir.path());
        let mut p = log.create_partition(pid(0), PartitionConfig::default()).unwrap();
        // (base offset, last offset, stored bytes) of every batch, in order.
        let mut model: Vec<(i64, i64, Vec<u8>)> = Vec::new();
        let mut log_start = 0i64;
        let mut end = 0i64;
        for (n, op) in ops.into_iter().enumerate() {
            match op {
                Op::Append { count } => {
                    let b = tagged(count, n);
                    // Stamped with the partition's epoch: the newest the log holds.
                    let epoch = p.leader_epoch();
                    let out = p.append(b.clone()).unwrap();
                    prop_assert_eq!(out.base_offset, end);
                    block_on(out.ack_wait(true).wait()).unwrap();
                    let mut expected = stored(&b, end);
                    expected[12..16].copy_from_slice(&epoch.to_be_bytes());
                    model.push((end, end + count as i64 - 1, expected));
                    end += count as i64;
                }
                Op::Replica { count, gap } => {
                    let base = end + gap;
                    let b = as_leader_stored(&tagged(count, n), base);
                    let out = p.append_replica(b.clone()).unwrap();
                    block_on(out.durable.wait()).unwrap();
                    prop_assert_eq!(out.base_offset, base);
                    // Stored exactly as the leader sent it, epoch included.
                    model.push((base, base + count as i64 - 1, b.to_vec()));
                    end = base + count as i64;
                    // A batch below the log end is refused and changes nothing.
                    let again = p.append_replica(b);
                    let refused = matches!(again, Err(AppendError::ReplicaOffsetOrder { .. }));
                    prop_assert!(refused);
                }
                Op::Truncate { per_mille } => {
                    let target = log_start + (end - log_start) * per_mille / 1_000;
                    let new_end = p.truncate_to(target).unwrap();
                    // Whole batches go: the one holding the target and all
                    // after. The end lands on the holder's base offset, or
                    // on the target itself when it lies in a gap.
                    let holder = model.iter().find(|(b, l, _)| *b <= target && target <= *l);
                    let expect = holder.map_or(target.min(end), |(b, _, _)| *b).max(log_start);
                    model.retain(|(_, last, _)| *last < target);
                    prop_assert_eq!(new_end, expect);
                    end = new_end;
                }
                Op::Delete { per_mille } => {
                    let target = log_start + (end - log_start) * per_mille / 1_000;
                    prop_assert_eq!(p.delete_records_before(target).unwrap(), target);
                    log_start = target;
                    model.retain(|(_, last, _)| *last >= log_start);
                }
                Op::StartAt { gap } => {
                    let target = end + gap;
                    prop_assert_eq!(p.truncate_fully_and_start_at(target).unwrap(), target);
                    log_start = target;
                    end = target;
                    model.clear();
                }
                Op::Reopen => {
                    log.shutdown().unwrap();
                    drop((log, p));
                    log = open(dir.path());
                    p = log.partition(pid(0)).unwrap();
                }
                Op::Crash => {
                    drop((log, p));
                    log = open(dir.path());
                    p = log.partition(pid(0)).unwrap();
                }
            }
            let offsets = p.offsets();
            prop_assert_eq!(offsets.log_end, end);
            prop_assert_eq!(offsets.high_watermark, end);
            prop_assert_eq!(offsets.log_start, log_start);
        }
        // Every batch reads back as stored; nothing truncated is left.
        for (base, last, bytes) in &model {
            let first = (*base).max(log_start);
            for offset in [first, *last] {
                let read = p.read(offset, 1).unwrap();
                prop_assert_eq!(&read.records[..], &bytes[..]);
            }
        }
        let mut at = log_start;
        let mut seen = 0;
        while at < end {
            let read = p.read(at, 1 << 20).unwrap();
            if read.records.is_empty() {
                break; // a gap up to the log end (a replica's, or a truncation inside one)
            }
            let infos = crate::batch::parse_replica_payload(&read.records).unwrap();
            for info in infos {
                let base = crate::format::be_i64(&read.records, info.start).unwrap();
                let wanted = model.iter().find(|(b, _, _)| *b == base);
                prop_assert!(wanted.is_some(), "batch {} was truncated or never written", base);
                at = base + i64::from(info.last_offset_delta) + 1;
                seen += 1;
            }
        }
        prop_assert_eq!(seen, model.len());
        log.shutdown().unwrap();
    }
}

#[test]
fn a_replica_keeps_producer_state_for_a_failover() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    let p = log
        .create_partition(pid(0), PartitionConfig::default())
        .unwrap();
    // Producer 7, epoch 0, sequences 0..3, stored by a leader at offset 0.
    let b = batch_with(3, 5, &[], Compression::None, Some((7, 0, 0)));
    let leader_copy = as_leader_stored(&b, 0);
    block_on(p.append_replica(leader_copy).unwrap().durable.wait()).unwrap();
    // Now leader: the producer's retry is a duplicate, its next batch follows.
    let retry = p.append(b).unwrap();
    assert!(retry.duplicate);
    assert_eq!(retry.base_offset, 0);
    let gap = batch_with(1, 5, &[], Compression::None, Some((7, 0, 5)));
    assert!(matches!(
        p.append(gap),
        Err(AppendError::OutOfOrderSequence { expected: 3, .. })
    ));
    let next = batch_with(1, 5, &[], Compression::None, Some((7, 0, 3)));
    assert_eq!(p.append(next).unwrap().base_offset, 3);
    log.shutdown().unwrap();
}

#[test]
fn truncation_below_the_log_start_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    let p = log
        .create_partition(pid(0), PartitionConfig::default())
        .unwrap();
    for _ in 0..4 {
        block_on(p.append(tagged(2, 1)).unwrap().durable.wait()).unwrap();
    }
    p.delete_records_before(4).unwrap();
    assert!(matches!(
        p.truncate_to(3),
        Err(TruncateError::BelowLogStart {
            offset: 3,
            log_start: 4
        })
    ));
    assert_eq!(p.offsets().log_end, 8);
    assert_eq!(p.truncate_to(9).unwrap(), 8, "past the end: nothing to do");
    log.shutdown().unwrap();
}

#[test]
fn replica_batches_teach_their_leader_epochs_and_truncation_cuts_them() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    let p = log
        .create_partition(pid(0), PartitionConfig::default())
        .unwrap();
    // Offsets 0..2 in epoch 0 (this broker led), then 2..4 from a leader of epoch 5.
    block_on(p.append(tagged(2, 1)).unwrap().durable.wait()).unwrap();
    let from_leader = as_leader_stored(&tagged(2, 2), 2);
    block_on(p.append_replica(from_leader).unwrap().durable.wait()).unwrap();
    assert_eq!(p.epoch_for_offset(3), Some(5));
    assert_eq!(p.end_offset_for_epoch(0), Some((0, 2)));
    // A crash keeps what the log says.
    drop((log, p));
    let log = open(dir.path());
    let p = log.partition(pid(0)).unwrap();
    assert_eq!(p.epoch_for_offset(3), Some(5));
    // Cutting the epoch-5 batches moves epoch 5's start to the new end,
    // across a crash too.
    assert_eq!(p.truncate_to(2).unwrap(), 2);
    assert_eq!(p.epoch_for_offset(1), Some(0));
    // The partition still follows epoch 5, which now starts at the new end.
    assert_eq!(p.leader_epoch(), 5);
    assert_eq!(p.end_offset_for_epoch(5), Some((5, 2)));
    assert_eq!(p.end_offset_for_epoch(0), Some((0, 2)));
    drop((log, p));
    let log = open(dir.path());
    let p = log.partition(pid(0)).unwrap();
    assert_eq!(p.offsets().log_end, 2);
    assert_eq!(p.end_offset_for_epoch(5), Some((5, 2)));
    assert_eq!(p.end_offset_for_epoch(0), Some((0, 2)));
    log.shutdown().unwrap();
}

#[test]
fn a_fresh_start_past_the_log_end_forgets_every_batch_and_producer_across_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    let p = log
        .create_partition(pid(0), PartitionConfig::default())
        .unwrap();
    // Producer 7 wrote offsets 0..3 (sequences 0..3) through a leader of epoch 5.
    let b = batch_with(3, 5, &[], Compression::None, Some((7, 0, 0)));
    block_on(
        p.append_replica(as_leader_stored(&b, 0))
            .unwrap()
            .durable
            .wait(),
    )
    .unwrap();
    assert!(matches!(
        p.truncate_fully_and_start_at(2),
        Err(TruncateError::BelowLogEnd {
            offset: 2,
            log_end: 3
        })
    ));
    assert_eq!(p.truncate_fully_and_start_at(10).unwrap(), 10);
    let at_start = |p: &Partition| {
        let o = p.offsets();
        assert_eq!(
            (o.log_start, o.high_watermark, o.log_end),
            (10, 10, 10),
            "{o:?}"
        );
        assert!(matches!(
            p.read(2, 1 << 20),
            Err(ReadError::OffsetOutOfRange { .. })
        ));
        assert!(p.read(10, 1 << 20).unwrap().records.is_empty());
        // The epoch covering the new start, as recovery trims it.
        assert_eq!(p.end_offset_for_epoch(5), Some((5, 10)));
    };
    at_start(&p);
    // Durable on return: a crash (no shutdown, no other checkpoint) keeps it.
    drop((log, p));
    let log = open(dir.path());
    let p = log.partition(pid(0)).unwrap();
    at_start(&p);
    // Producer 7 is forgotten and the table may have forgotten others: its
    // next batch is taken at any sequence, as a new producer's would be.
    let next = batch_with(1, 5, &[], Compression::None, Some((7, 0, 3)));
    let out = p.append(next).unwrap();
    assert!(!out.duplicate);
    assert_eq!(out.base_offset, 10);
    let stranger = batch_with(1, 5, &[], Compression::None, Some((8, 0, 42)));
    assert_eq!(p.append(stranger).unwrap().base_offset, 11);
    log.shutdown().unwrap();
}
