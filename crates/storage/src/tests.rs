//! Unit tests of the whole engine through its public API, with injected
//! clocks and file I/O.

use std::fs::File;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::records::Compression;
use uuid::Uuid;

use crate::batch::test_batches::{batch, batch_with};
use crate::io::FileIo;
use crate::*;

/// A clock the test moves by hand.
#[derive(Default)]
pub(crate) struct ManualClock(pub AtomicI64);

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// File I/O whose fdatasync can be held back or made to fail.
#[derive(Default)]
struct GatedIo {
    fail_sync: AtomicBool,
    held: Mutex<bool>,
    released: Condvar,
}

impl GatedIo {
    fn hold(&self) {
        *self.held.lock().unwrap() = true;
    }
    fn release(&self) {
        *self.held.lock().unwrap() = false;
        self.released.notify_all();
    }
}

impl FileIo for GatedIo {
    fn sync_data(&self, file: &File) -> std::io::Result<()> {
        let mut held = self.held.lock().unwrap();
        while *held {
            held = self.released.wait(held).unwrap();
        }
        drop(held);
        if self.fail_sync.load(Ordering::SeqCst) {
            return Err(std::io::Error::from_raw_os_error(libc_eio()));
        }
        file.sync_data()
    }
}

fn libc_eio() -> i32 {
    5 // EIO
}

pub(crate) fn pid(n: i32) -> PartitionId {
    PartitionId {
        topic_id: Uuid::from_u128(0xfeed),
        partition: n,
    }
}

pub(crate) fn open_log(dir: &Path, config: LogConfig) -> CommitLog {
    CommitLog::open(dir, config, Arc::new(ManualClock::default()))
        .unwrap()
        .0
}

pub(crate) fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
}

/// The batch as the log stores it: base offset and leader epoch patched.
pub(crate) fn stored(b: &Bytes, base_offset: i64) -> Vec<u8> {
    let mut v = b.to_vec();
    crate::batch::patch_offsets(&mut v, base_offset, 0);
    v
}

fn small_segments() -> LogConfig {
    LogConfig {
        segment_bytes: 2_000,
        ..LogConfig::default()
    }
}

#[test]
fn appended_batches_read_back_byte_for_byte_across_segment_rolls() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path(), small_segments());
    let p = log
        .create_partition(pid(0), PartitionConfig::default())
        .unwrap();
    let mut expected = Vec::new();
    for i in 0..40usize {
        let b = batch(1 + i % 4, 20 + i * 7);
        let out = p.append(b.clone()).unwrap();
        block_on(out.durable.wait()).unwrap();
        expected.push((
            out.base_offset,
            out.last_offset,
            stored(&b, out.base_offset),
        ));
    }
    let segments = std::fs::read_dir(dir.path().join("log")).unwrap().count();
    assert!(segments > 3, "only {segments} segments");
    for (base, last, bytes) in &expected {
        for offset in *base..=*last {
            let r = p.read(offset, 1).unwrap();
            assert_eq!(&r.records[..], &bytes[..], "offset {offset}");
        }
    }
    // A large read returns consecutive batches, stitched across segments.
    let all: Vec<u8> = expected.iter().flat_map(|(_, _, b)| b.clone()).collect();
    let r = p.read(0, 1 << 20).unwrap();
    assert_eq!(&r.records[..], &all[..]);
    log.shutdown().unwrap();
}

#[test]
fn read_limits_and_ranges_follow_kafka() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path(), LogConfig::default());
    let p = log
        .create_partition(pid(0), PartitionConfig::default())
        .unwrap();
    let a = batch(3, 100);
    let b = batch(2, 100);
    let oa = p.append(a.clone()).unwrap();
    block_on(oa.durable.wait()).unwrap();
    let ob = p.append(b.clone()).unwrap();
    block_on(ob.durable.wait()).unwrap();
    assert_eq!(
        (
            oa.base_offset,
            oa.last_offset,
            ob.base_offset,
            ob.last_offset
        ),
        (0, 2, 3, 4)
    );
    // max_bytes smaller than one batch still returns that batch (KIP-74).
    assert_eq!(p.read(1, 10).unwrap().records.len(), a.len());
    // Room for both batches returns both.
    assert_eq!(
        p.read(0, a.len() + b.len()).unwrap().records.len(),
        a.len() + b.len()
    );
    // The end of the log reads empty; past it is out of range.
    let r = p.read(5, 1000).unwrap();
    assert!(r.records.is_empty());
    assert_eq!(r.offsets.high_watermark, 5);
    assert!(matches!(
        p.read(6, 1000),
        Err(ReadError::OffsetOutOfRange { .. })
    ));
    assert!(matches!(
        p.read(-1, 1000),
        Err(ReadError::OffsetOutOfRange { .. })
    ));
    log.shutdown().unwrap();
}

#[test]
fn refused_payload_appends_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path(), LogConfig::default());
    let p = log
        .create_partition(pid(0), PartitionConfig::default())
        .unwrap();
    let mut payload = batch(2, 10).to_vec();
    let mut bad = batch(2, 10).to_vec();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    payload.extend_from_slice(&bad);
    assert!(matches!(
        p.append(Bytes::from(payload)),
        Err(AppendError::CorruptBatch)
    ));
    assert_eq!(p.offsets().log_end, 0);
    let too_big = PartitionConfig {
        max_message_bytes: 50,
        ..PartitionConfig::default()
    };
    p.set_config(too_big);
    assert!(matches!(
        p.append(batch(2, 10)),
        Err(AppendError::MessageTooLarge { .. })
    ));
    assert_eq!(p.offsets().log_end, 0);
    log.shutdown().unwrap();
}

#[test]
fn time_lookup_finds_records_inside_plain_and_compressed_batches() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path(), LogConfig::default());
    for (n, c) in [
        Compression::None,
        Compression::Gzip,
        Compression::Lz4,
        Compression::Zstd,
        Compression::Snappy,
    ]
    .into_iter()
    .enumerate()
    {
        let p = log
            .create_partition(pid(n as i32), PartitionConfig::default())
            .unwrap();
        // Timestamps go backwards between batches: the running max keeps the search sound.
        for ts in [[100, 110, 120], [90, 95, 130], [200, 150, 250]] {
            let out = p.append(batch_with(3, 5, &ts, c, None)).unwrap();
            block_on(out.durable.wait()).unwrap();
        }
        assert_eq!(p.offset_for_timestamp(0).unwrap(), Some((0, 100)), "{c:?}");
        assert_eq!(
            p.offset_for_timestamp(111).unwrap(),
            Some((2, 120)),
            "{c:?}"
        );
        assert_eq!(
            p.offset_for_timestamp(121).unwrap(),
            Some((5, 130)),
            "{c:?}"
        );
        assert_eq!(
            p.offset_for_timestamp(140).unwrap(),
            Some((6, 200)),
            "{c:?}"
        );
        assert_eq!(
            p.offset_for_timestamp(201).unwrap(),
            Some((8, 250)),
            "{c:?}"
        );
        assert_eq!(p.offset_for_timestamp(251).unwrap(), None, "{c:?}");
        assert_eq!(p.max_timestamp().unwrap(), Some((8, 250)), "{c:?}");
    }
    log.shutdown().unwrap();
}

#[test]
fn log_append_time_stamps_the_batch_and_its_lookups() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock(AtomicI64::new(7_000)));
    let log = CommitLog::open(dir.path(), LogConfig::default(), clock)
        .unwrap()
        .0;
    let config = PartitionConfig {
        timestamp_type: TimestampType::LogAppendTime,
        ..PartitionConfig::default()
    };
    let p = log.create_partition(pid(0), config).unwrap();
    let out = p
        .append(batch_with(2, 5, &[1, 2], Compression::None, None))
        .unwrap();
    assert_eq!(out.log_append_time, 7_000);
    block_on(out.durable.wait()).unwrap();
    let r = p.read(0, 1000).unwrap();
    // The stored batch still passes its CRC, with the append time as max timestamp.
    let infos = crate::batch::parse_payload(&r.records, u32::MAX).unwrap();
    assert_eq!(infos[0].max_timestamp, 7_000);
    assert_eq!(p.offset_for_timestamp(5).unwrap(), Some((0, 7_000)));
    log.shutdown().unwrap();
}

#[test]
fn idempotent_producer_duplicates_gaps_and_epochs() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path(), LogConfig::default());
    let p = log
        .create_partition(pid(0), PartitionConfig::default())
        .unwrap();
    let b0 = batch_with(3, 5, &[], Compression::None, Some((42, 0, 0)));
    let b1 = batch_with(2, 5, &[], Compression::None, Some((42, 0, 3)));
    let first = p.append(b0.clone()).unwrap();
    assert!(!first.duplicate);
    let second = p.append(b1.clone()).unwrap();
    assert_eq!((second.base_offset, second.last_offset), (3, 4));
    // A retry of the first batch is answered with its original offsets and writes nothing.
    let retry = p.append(b0.clone()).unwrap();
    assert!(retry.duplicate);
    assert_eq!((retry.base_offset, retry.last_offset), (0, 2));
    block_on(retry.durable.wait()).unwrap();
    assert_eq!(p.offsets().log_end, 5);
    // A gap is refused.
    let gap = batch_with(1, 5, &[], Compression::None, Some((42, 0, 9)));
    assert!(matches!(
        p.append(gap),
        Err(AppendError::OutOfOrderSequence {
            expected: 5,
            got: 9,
            ..
        })
    ));
    // A new epoch must start at sequence 0; an older one is fenced.
    let new_epoch_bad = batch_with(1, 5, &[], Compression::None, Some((42, 1, 5)));
    assert!(matches!(
        p.append(new_epoch_bad),
        Err(AppendError::OutOfOrderSequence { expected: 0, .. })
    ));
    p.append(batch_with(1, 5, &[], Compression::None, Some((42, 1, 0))))
        .unwrap();
    let old_epoch = batch_with(1, 5, &[], Compression::None, Some((42, 0, 5)));
    assert!(matches!(
        p.append(old_epoch),
        Err(AppendError::InvalidProducerEpoch {
            current: 1,
            got: 0,
            ..
        })
    ));
    // A producer this partition has never seen starts at sequence 0: it
    // has forgotten no one, so a later first sequence means batches that
    // never reached it (a failover's lost tail), not an expired state.
    let unseen = batch_with(1, 5, &[], Compression::None, Some((77, 0, 1000)));
    assert!(matches!(
        p.append(unseen),
        Err(AppendError::OutOfOrderSequence {
            expected: 0,
            got: 1000,
            ..
        })
    ));
    p.append(batch_with(1, 5, &[], Compression::None, Some((77, 0, 0))))
        .unwrap();
    log.shutdown().unwrap();

    // The state survives a restart: the retry is still a duplicate.
    let log = open_log(dir.path(), LogConfig::default());
    let p = log
        .create_partition(pid(0), PartitionConfig::default())
        .unwrap();
    let retry = p
        .append(batch_with(1, 5, &[], Compression::None, Some((42, 1, 0))))
        .unwrap();
    assert!(retry.duplicate);
    assert_eq!(retry.base_offset, 5);
    let next = batch_with(1, 5, &[], Compression::None, Some((77, 0, 1)));
    assert!(!p.append(next).unwrap().duplicate);
    assert!(matches!(
        p.append(batch_with(1, 5, &[], Compression::None, Some((78, 0, 9)))),
        Err(AppendError::OutOfOrderSequence { expected: 0, .. })
    ));
    // Records deleted from the log start do not take producers' state with
    // them across a restart: the snapshot keeps it, so a known producer
    // carries on and an unknown one still starts at 0.
    p.delete_records_before(7).unwrap();
    log.shutdown().unwrap();
    let log = open_log(dir.path(), LogConfig::default());
    let p = log
        .create_partition(pid(0), PartitionConfig::default())
        .unwrap();
    assert!(matches!(
        p.append(batch_with(1, 5, &[], Compression::None, Some((79, 0, 40)))),
        Err(AppendError::OutOfOrderSequence { expected: 0, .. })
    ));
    assert!(matches!(
        p.append(batch_with(1, 5, &[], Compression::None, Some((77, 0, 5)))),
        Err(AppendError::OutOfOrderSequence { expected: 2, .. })
    ));
    let next = batch_with(1, 5, &[], Compression::None, Some((77, 0, 2)));
    assert!(!p.append(next).unwrap().duplicate);
    // Without a snapshot (one removed by hand, as after a build that kept
    // none), the state comes from the batches left, and an unknown
    // producer may be one whose state expired: accepted at any sequence,
    // as in Kafka.
    p.delete_records_before(8).unwrap();
    log.shutdown().unwrap();
    std::fs::remove_dir_all(dir.path().join("producer-state")).unwrap();
    std::fs::create_dir(dir.path().join("producer-state")).unwrap();
    let log = open_log(dir.path(), LogConfig::default());
    let p = log
        .create_partition(pid(0), PartitionConfig::default())
        .unwrap();
    assert!(
        !p.append(batch_with(1, 5, &[], Compression::None, Some((79, 0, 40))))
            .unwrap()
            .duplicate
    );
    log.shutdown().unwrap();
}

#[test]
fn high_watermark_moves_only_after_the_fsync_when_flush_messages_is_one() {
    let dir = tempfile::tempdir().unwrap();
    let io = Arc::new(GatedIo::default());
    let (log, _) = CommitLog::open_with_io(
        dir.path(),
        LogConfig::default(),
        Arc::new(ManualClock::default()),
        io.clone(),
    )
    .unwrap();
    let strict = log
        .create_partition(pid(0), PartitionConfig::default())
        .unwrap();
    let relaxed_config = PartitionConfig {
        flush_messages: 1_000,
        ..PartitionConfig::default()
    };
    let relaxed = log.create_partition(pid(1), relaxed_config).unwrap();
    io.hold();
    let out = strict.append(batch(2, 10)).unwrap();
    assert!(!out.durable.is_ready());
    let o = strict.offsets();
    assert_eq!((o.high_watermark, o.log_end), (0, 2));
    assert!(strict.read(0, 100).unwrap().records.is_empty());
    // A relaxed partition exposes its records at once.
    let rel = relaxed.append(batch(3, 10)).unwrap();
    assert!(rel.durable.is_ready());
    assert_eq!(relaxed.offsets().high_watermark, 3);
    io.release();
    block_on(out.durable.wait()).unwrap();
    assert_eq!(strict.offsets().high_watermark, 2);
    assert_eq!(
        strict.read(0, 100).unwrap().records.len(),
        batch(2, 10).len()
    );
    log.shutdown().unwrap();
}

#[test]
fn high_watermark_stops_at_its_replication_bound_and_never_moves_back() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path(), LogConfig::default());
    let p = log
        .create_partition(pid(0), PartitionConfig::default())
        .unwrap();
    assert_eq!(p.set_high_watermark_bound(Some(0)), 0);
    let first = p.append(batch(3, 10)).unwrap();
    let mut committed = std::pin::pin!(first.committed.wait());
    block_on(p.append(batch(2, 10)).unwrap().durable.wait()).unwrap();
    // Durable to 5, but the followers confirmed nothing yet.
    let o = p.offsets();
    assert_eq!((o.high_watermark, o.log_end), (0, 5));
    assert!(poll_once(committed.as_mut()).is_none());
    assert!(p.read(0, 1 << 20).unwrap().records.is_empty());

    let mut progress = log.progress();
    progress.borrow_and_update();
    assert_eq!(p.set_high_watermark_bound(Some(3)), 3);
    assert!(progress.has_changed().unwrap(), "a move wakes long polls");
    block_on(committed).unwrap();
    assert_eq!(
        p.read(0, 1 << 20).unwrap().records.len(),
        batch(3, 10).len()
    );

    // A lower bound does not take back what consumers may have read.
    assert_eq!(p.set_high_watermark_bound(Some(1)), 3);
    // A bound past the durable end stops at the durable end.
    assert_eq!(p.set_high_watermark_bound(Some(100)), 5);
    let pending = p.append(batch(1, 10)).unwrap();
    block_on(pending.durable.wait()).unwrap();
    assert_eq!(
        p.offsets().high_watermark,
        6,
        "durability moves it up to the bound"
    );
    // No bound: a single node's partition, the high watermark at the durable end.
    p.set_high_watermark_bound(Some(6));
    block_on(p.append(batch(1, 10)).unwrap().durable.wait()).unwrap();
    assert_eq!(p.offsets().high_watermark, 6);
    assert_eq!(p.set_high_watermark_bound(None), 7);
    log.shutdown().unwrap();
}

#[test]
fn a_relaxed_partition_exposes_appends_only_up_to_its_bound() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path(), LogConfig::default());
    let relaxed = PartitionConfig {
        flush_messages: 1_000,
        ..PartitionConfig::default()
    };
    let p = log.create_partition(pid(0), relaxed).unwrap();
    p.set_high_watermark_bound(Some(2));
    p.append(batch(5, 10)).unwrap();
    assert_eq!(p.offsets().high_watermark, 2);
    assert_eq!(p.set_high_watermark_bound(Some(4)), 4);
    // A truncation lowers the high watermark; the bound still holds after.
    assert_eq!(p.truncate_to(0).unwrap(), 0);
    assert_eq!(p.offsets().high_watermark, 0);
    p.append(batch(6, 10)).unwrap();
    assert_eq!(p.offsets().high_watermark, 4);
    log.shutdown().unwrap();
}

#[test]
fn a_replica_read_reaches_the_log_end_while_a_consumer_read_stops_at_the_high_watermark() {
    let dir = tempfile::tempdir().unwrap();
    let io = Arc::new(GatedIo::default());
    let log = open_with(dir.path(), no_checkpoints(), io.clone());
    let p = log
        .create_partition(pid(0), PartitionConfig::default())
        .unwrap();
    p.append(batch(2, 10)).unwrap();
    log.inner.log.sync_now().unwrap();
    io.hold();
    let pending = p.append(batch(3, 10)).unwrap();
    let o = p.offsets();
    assert_eq!((o.high_watermark, o.log_end), (2, 5));
    assert!(p.read(2, 1 << 20).unwrap().records.is_empty());
    assert!(matches!(
        p.read(3, 1 << 20),
        Err(ReadError::OffsetOutOfRange { log_end: 2, .. })
    ));
    let replica = p.read_replica(0, 1 << 20).unwrap();
    assert_eq!(
        replica.records.len(),
        batch(2, 10).len() + batch(3, 10).len()
    );
    let tail = p.read_replica(2, 1 << 20).unwrap().records;
    assert_eq!(tail.len(), batch(3, 10).len());
    let bases: Vec<i64> = crate::batch::batches(&tail)
        .map(|b| b.unwrap().0.base_offset)
        .collect();
    assert_eq!(bases, [2], "the one batch past the high watermark");
    assert!(p.read_replica(5, 1 << 20).unwrap().records.is_empty());
    assert!(matches!(
        p.read_replica(6, 1 << 20),
        Err(ReadError::OffsetOutOfRange { log_end: 5, .. })
    ));
    io.release();
    block_on(pending.durable.wait()).unwrap();
    assert_eq!(
        p.read(2, 1 << 20).unwrap().records.len(),
        batch(3, 10).len()
    );
    log.shutdown().unwrap();
}

/// Poll a future once; `Some` when it finished.
fn poll_once<F: std::future::Future>(f: F) -> Option<F::Output> {
    let mut f = std::pin::pin!(f);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match f.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(out) => Some(out),
        std::task::Poll::Pending => None,
    }
}

#[test]
fn acks_all_fails_for_a_batch_truncated_away_even_once_the_high_watermark_passes_its_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let io = Arc::new(GatedIo::default());
    let log = open_with(dir.path(), no_checkpoints(), io.clone());
    let p = log
        .create_partition(pid(0), PartitionConfig::default())
        .unwrap();
    block_on(p.append(batch(2, 10)).unwrap().durable.wait()).unwrap();
    io.hold();
    let kept = p.append(batch(2, 10)).unwrap().ack_wait(true); // offsets 2..4
    let cut = p.append(batch(2, 10)).unwrap().ack_wait(true); // offsets 4..6
    let truncation = std::thread::spawn({
        let p = p.clone();
        move || p.truncate_to(4)
    });
    // The truncation cuts memory first, then waits for its entry's sync.
    let deadline = Instant::now() + Duration::from_secs(60);
    while p.offsets().log_end != 4 {
        assert!(Instant::now() < deadline, "the truncation never started");
        std::thread::yield_now();
    }
    io.release();
    assert_eq!(truncation.join().unwrap().unwrap(), 4);
    block_on(kept.wait()).unwrap();
    // New batches take offsets 4..6 again and commit: the high watermark
    // passes the cut batch's end, and its producer must still hear it failed.
    block_on(p.append(batch(2, 10)).unwrap().ack_wait(true).wait()).unwrap();
    assert_eq!(p.offsets().high_watermark, 6);
    assert!(matches!(
        block_on(cut.wait()),
        Err(StorageError::Truncated {
            end_offset: 6,
            truncated_to: 4
        })
    ));
    log.shutdown().unwrap();
}

#[test]
fn acks_all_waits_for_the_high_watermark_and_fails_when_the_log_is_poisoned() {
    let dir = tempfile::tempdir().unwrap();
    let io = Arc::new(GatedIo::default());
    let log = open_with(dir.path(), no_checkpoints(), io.clone());
    let p = log
        .create_partition(pid(0), PartitionConfig::default())
        .unwrap();
    io.hold();
    let first = p.append(batch(2, 10)).unwrap();
    let mut committed = std::pin::pin!(first.ack_wait(true).wait());
    assert!(poll_once(committed.as_mut()).is_none(), "no fsync yet");
    assert_eq!(p.offsets().high_watermark, 0);
    io.release();
    block_on(committed).unwrap();
    assert_eq!(p.offsets().high_watermark, 2);
    // A wait that is pending when the fsync fails fails with it.
    io.hold();
    let second = p.append(batch(1, 10)).unwrap();
    io.fail_sync.store(true, Ordering::SeqCst);
    io.release();
    let err = block_on(second.ack_wait(true).wait()).unwrap_err();
    assert!(matches!(err, StorageError::Poisoned { .. }), "{err}");
}

#[test]
fn failed_fsync_poisons_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let io = Arc::new(GatedIo::default());
    let (log, _) = CommitLog::open_with_io(
        dir.path(),
        LogConfig::default(),
        Arc::new(ManualClock::default()),
        io.clone(),
    )
    .unwrap();
    let p = log
        .create_partition(pid(0), PartitionConfig::default())
        .unwrap();
    let ok = p.append(batch(1, 10)).unwrap();
    block_on(ok.durable.wait()).unwrap();
    io.fail_sync.store(true, Ordering::SeqCst);
    let pending = p.append(batch(1, 10)).unwrap();
    let err = block_on(pending.durable.wait()).unwrap_err();
    assert!(matches!(err, StorageError::Poisoned { .. }), "{err}");
    // Not retried: later appends are refused even once the disk "recovers".
    io.fail_sync.store(false, Ordering::SeqCst);
    assert!(matches!(
        p.append(batch(1, 10)),
        Err(AppendError::Storage(StorageError::Poisoned { .. }))
    ));
    // The record that never became durable was never exposed.
    assert_eq!(p.offsets().high_watermark, 1);
}

#[test]
fn progress_changes_when_the_high_watermark_moves() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path(), LogConfig::default());
    let p = log
        .create_partition(pid(0), PartitionConfig::default())
        .unwrap();
    let mut progress = log.progress();
    let before = *progress.borrow_and_update();
    let out = p.append(batch(1, 10)).unwrap();
    block_on(out.durable.wait()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while *progress.borrow() == before {
        assert!(Instant::now() < deadline, "progress never moved");
        std::thread::yield_now();
    }
    log.shutdown().unwrap();
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for ent in std::fs::read_dir(from).unwrap() {
        let ent = ent.unwrap();
        let target = to.join(ent.file_name());
        if ent.file_type().unwrap().is_dir() {
            copy_dir(&ent.path(), &target);
        } else {
            std::fs::copy(ent.path(), &target).unwrap();
        }
    }
}

fn last_segment(dir: &Path) -> std::path::PathBuf {
    let mut files: Vec<_> = std::fs::read_dir(dir.join("log"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files.pop().unwrap()
}

fn segment_count(dir: &Path) -> usize {
    std::fs::read_dir(dir.join("log")).unwrap().count()
}

fn no_checkpoints() -> LogConfig {
    LogConfig {
        index_checkpoint_interval_ms: 3_600_000,
        ..LogConfig::default()
    }
}

/// Append `n` batches to partition `p` of a fresh log, waiting for each to be durable.
fn fill(p: &Partition, n: usize, value_len: usize) -> Vec<(i64, Vec<u8>)> {
    (0..n)
        .map(|i| {
            let b = batch(1 + i % 3, value_len + i);
            let out = p.append(b.clone()).unwrap();
            block_on(out.durable.wait()).unwrap();
            (out.base_offset, stored(&b, out.base_offset))
        })
        .collect()
}

fn assert_reads(p: &Partition, expected: &[(i64, Vec<u8>)]) {
    for (base, bytes) in expected {
        let r = p.read(*base, 1).unwrap();
        assert_eq!(&r.records[..], &bytes[..], "batch at {base}");
    }
}

#[test]
fn a_torn_last_entry_is_cut_at_every_byte_and_appends_continue() {
    let dir = tempfile::tempdir().unwrap();
    let snapshot = tempfile::tempdir().unwrap();
    let (earlier, last_len, last_base) = {
        let log = open_log(dir.path(), no_checkpoints());
        let p = log
            .create_partition(pid(0), PartitionConfig::default())
            .unwrap();
        let earlier = fill(&p, 5, 30);
        log.shutdown().unwrap();
        // Reopen so the checkpoint lies before the last entry, then "crash" after it.
        let log = open_log(dir.path(), no_checkpoints());
        let p = log.partition(pid(0)).unwrap();
        let mut earlier = earlier;
        earlier.extend(fill(&p, 2, 40));
        let b = batch(2, 50);
        let out = p.append(b.clone()).unwrap();
        block_on(out.durable.wait()).unwrap();
        copy_dir(dir.path(), snapshot.path());
        (
            earlier,
            b.len() + crate::format::ENTRY_HEADER_BYTES,
            out.base_offset,
        )
    };
    let seg = last_segment(snapshot.path());
    let full = std::fs::metadata(&seg).unwrap().len();
    for keep in 0..last_len as u64 {
        let trial = tempfile::tempdir().unwrap();
        copy_dir(snapshot.path(), trial.path());
        let seg = trial.path().join("log").join(seg.file_name().unwrap());
        std::fs::OpenOptions::new()
            .write(true)
            .open(&seg)
            .unwrap()
            .set_len(full - last_len as u64 + keep)
            .unwrap();
        let (log, report) = CommitLog::open(
            trial.path(),
            no_checkpoints(),
            Arc::new(ManualClock::default()),
        )
        .unwrap();
        assert_eq!(report.bytes_truncated, keep, "cut at {keep}");
        let p = log.partition(pid(0)).unwrap();
        assert_eq!(p.offsets().log_end, last_base, "cut at {keep}");
        assert_eq!(p.offsets().high_watermark, last_base, "cut at {keep}");
        assert_reads(&p, &earlier);
        let again = p.append(batch(1, 10)).unwrap();
        assert_eq!(again.base_offset, last_base, "cut at {keep}");
        block_on(again.durable.wait()).unwrap();
        log.shutdown().unwrap();
    }
}

#[test]
fn garbage_after_the_last_entry_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    let expected = {
        let log = open_log(dir.path(), no_checkpoints());
        let p = log
            .create_partition(pid(0), PartitionConfig::default())
            .unwrap();
        let e = fill(&p, 4, 30);
        log.shutdown().unwrap();
        e
    };
    // Without a checkpoint the whole log is scanned.
    std::fs::remove_file(dir.path().join("checkpoint")).unwrap();
    let seg = last_segment(dir.path());
    let mut f = std::fs::OpenOptions::new().append(true).open(&seg).unwrap();
    std::io::Write::write_all(&mut f, &[0xab; 333]).unwrap();
    drop(f);
    let (log, report) = CommitLog::open(
        dir.path(),
        no_checkpoints(),
        Arc::new(ManualClock::default()),
    )
    .unwrap();
    assert_eq!(report.bytes_truncated, 333);
    assert_eq!(report.index_entries_rebuilt, 4);
    let p = log.partition(pid(0)).unwrap();
    assert_reads(&p, &expected);
    assert_eq!(
        p.append(batch(1, 1)).unwrap().base_offset,
        expected.last().unwrap().0 + 1
    );
    log.shutdown().unwrap();
}

#[test]
fn entries_of_removed_partitions_are_skipped_on_recovery() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = open_log(dir.path(), no_checkpoints());
        let a = log
            .create_partition(pid(0), PartitionConfig::default())
            .unwrap();
        let b = log
            .create_partition(pid(1), PartitionConfig::default())
            .unwrap();
        fill(&a, 2, 10);
        fill(&b, 2, 10);
        log.remove_partition(pid(1)).unwrap();
        log.shutdown().unwrap();
    }
    std::fs::remove_file(dir.path().join("checkpoint")).unwrap();
    let log = open_log(dir.path(), no_checkpoints());
    assert_eq!(log.partitions(), vec![pid(0)]);
    assert_eq!(log.partition(pid(0)).unwrap().offsets().log_end, 3);
    log.shutdown().unwrap();
}

#[test]
fn retention_by_time_advances_the_log_start_and_deletes_segments() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::default());
    let log = CommitLog::open(dir.path(), small_segments(), clock.clone())
        .unwrap()
        .0;
    let config = PartitionConfig {
        retention_ms: Some(10_000),
        ..PartitionConfig::default()
    };
    let p = log.create_partition(pid(0), config).unwrap();
    // Old batches (timestamps around 1_000), then new ones (around 100_000).
    for i in 0..20i64 {
        let ts = if i < 15 { 1_000 + i } else { 100_000 + i };
        let out = p
            .append(batch_with(2, 200, &[ts, ts], Compression::None, None))
            .unwrap();
        block_on(out.durable.wait()).unwrap();
    }
    let before = segment_count(dir.path());
    clock.0.store(105_000, Ordering::SeqCst);
    log.run_maintenance().unwrap();
    assert_eq!(p.offsets().log_start, 30);
    assert!(matches!(
        p.read(29, 100),
        Err(ReadError::OffsetOutOfRange { .. })
    ));
    assert_eq!(p.read(30, 1).unwrap().records.len(), batch(2, 200).len());
    let after = segment_count(dir.path());
    assert!(after < before, "segments {before} -> {after}");
    log.shutdown().unwrap();
    // The log start survives a restart.
    let log = open_log(dir.path(), small_segments());
    assert_eq!(log.partition(pid(0)).unwrap().offsets().log_start, 30);
    log.shutdown().unwrap();
}

#[test]
fn retention_by_size_keeps_the_newest_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path(), small_segments());
    let one = batch(1, 100).len() as i64;
    let config = PartitionConfig {
        retention_bytes: Some(3 * one),
        retention_ms: None,
        ..PartitionConfig::default()
    };
    let p = log.create_partition(pid(0), config).unwrap();
    for _ in 0..10 {
        let out = p.append(batch(1, 100)).unwrap();
        block_on(out.durable.wait()).unwrap();
    }
    log.run_maintenance().unwrap();
    assert_eq!(p.offsets().log_start, 7);
    assert_eq!(p.read(7, 1 << 20).unwrap().records.len() as i64, 3 * one);
    log.shutdown().unwrap();
}

/// Append `payloads` payloads of `per_payload` one-record batches each
/// (one index entry per batch), waiting for the last to be durable.
fn fill_many(p: &Partition, payloads: usize, per_payload: usize) -> usize {
    let one = batch(1, 10);
    let mut payload = Vec::with_capacity(one.len() * per_payload);
    for _ in 0..per_payload {
        payload.extend_from_slice(&one);
    }
    let payload = Bytes::from(payload);
    let mut last = None;
    for _ in 0..payloads {
        last = Some(p.append(payload.clone()).unwrap());
    }
    if let Some(out) = last {
        block_on(out.durable.wait()).unwrap();
    }
    one.len()
}

#[test]
fn log_start_moves_over_many_steps_land_where_one_move_would() {
    let step = crate::partition::LOG_START_STEP_ENTRIES as i64;
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path(), no_checkpoints());
    let deleted = log
        .create_partition(pid(0), PartitionConfig::default())
        .unwrap();
    let kept = 100;
    let one = fill_many(&deleted, 5, 8_000) as i64; // 40,000 batches, offsets 0..40,000
    let sized = PartitionConfig {
        retention_bytes: Some(kept * one),
        retention_ms: None,
        ..PartitionConfig::default()
    };
    let retained = log.create_partition(pid(1), sized).unwrap();
    fill_many(&retained, 5, 8_000);
    assert!(40_000 > 2 * step, "the moves below take several steps");

    // DeleteRecords over more than two steps' worth of batches.
    assert_eq!(deleted.delete_records_before(35_001).unwrap(), 35_001);
    assert_eq!(deleted.offsets().log_start, 35_001);
    assert!(matches!(
        deleted.read(35_000, 1 << 20),
        Err(ReadError::OffsetOutOfRange { .. })
    ));
    let read = deleted.read(35_001, 1 << 20).unwrap().records;
    assert_eq!(read.len() as i64, (40_000 - 35_001) * one);

    // Retention by size: keeps the newest `kept` batches, whatever the steps.
    log.run_maintenance().unwrap();
    assert_eq!(retained.offsets().log_start, 40_000 - kept);
    let read = retained.read(40_000 - kept, 1 << 20).unwrap().records;
    assert_eq!(read.len() as i64, kept * one);

    // Both survive a restart (DeleteRecords is durable on return; retention
    // was checkpointed by maintenance).
    drop((deleted, retained, log));
    let log = open_log(dir.path(), no_checkpoints());
    assert_eq!(log.partition(pid(0)).unwrap().offsets().log_start, 35_001);
    assert_eq!(
        log.partition(pid(1)).unwrap().offsets().log_start,
        40_000 - kept
    );
    log.shutdown().unwrap();
}

#[test]
fn delete_records_moves_the_log_start_durably() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = open_log(dir.path(), no_checkpoints());
        let p = log
            .create_partition(pid(0), PartitionConfig::default())
            .unwrap();
        fill(&p, 6, 20); // offsets 0..=11
        assert_eq!(p.delete_records_before(4).unwrap(), 4);
        assert!(matches!(
            p.read(3, 100),
            Err(ReadError::OffsetOutOfRange { .. })
        ));
        // Mid-batch start: the batch holding offset 4 is still returned whole.
        assert!(!p.read(4, 1).unwrap().records.is_empty());
        assert!(matches!(
            p.delete_records_before(100),
            Err(ReadError::OffsetOutOfRange { .. })
        ));
        // Crash: no shutdown, no periodic checkpoint.
    }
    let log = open_log(dir.path(), no_checkpoints());
    let p = log.partition(pid(0)).unwrap();
    assert_eq!(p.offsets().log_start, 4);
    assert_eq!(
        p.delete_records_before(-1).unwrap(),
        p.offsets().high_watermark
    );
    assert!(
        p.read(p.offsets().high_watermark, 10)
            .unwrap()
            .records
            .is_empty()
    );
    log.shutdown().unwrap();
}

#[test]
fn size_counts_the_bytes_of_the_live_batches_across_log_start_moves_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let sizes: Vec<u64>;
    {
        let log = open_log(dir.path(), no_checkpoints());
        let p = log
            .create_partition(pid(0), PartitionConfig::default())
            .unwrap();
        let other = log
            .create_partition(pid(1), PartitionConfig::default())
            .unwrap();
        assert_eq!(p.size_bytes(), 0);
        let batches = fill(&p, 6, 20); // offsets 0..=11, the third batch at 3
        fill(&other, 4, 50);
        sizes = batches.iter().map(|(_, b)| b.len() as u64).collect();
        // Only its own batches, not the other partition's in the same segments.
        assert_eq!(p.size_bytes(), sizes.iter().sum::<u64>());
        assert_eq!(p.delete_records_before(3).unwrap(), 3);
        log.run_maintenance().unwrap();
        assert_eq!(p.size_bytes(), sizes[2..].iter().sum::<u64>());
        // Crash: no shutdown, no periodic checkpoint.
    }
    let log = open_log(dir.path(), no_checkpoints());
    assert_eq!(
        log.partition(pid(0)).unwrap().size_bytes(),
        sizes[2..].iter().sum::<u64>()
    );
    log.shutdown().unwrap();
}

#[test]
fn cleaner_frees_segments_pinned_by_a_long_retention_partition() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::default());
    let config = LogConfig {
        segment_bytes: 8_192,
        ..no_checkpoints()
    };
    let log = CommitLog::open(dir.path(), config.clone(), clock.clone())
        .unwrap()
        .0;
    let keep = log
        .create_partition(
            pid(0),
            PartitionConfig {
                retention_ms: None,
                ..PartitionConfig::default()
            },
        )
        .unwrap();
    let short_config = PartitionConfig {
        retention_ms: Some(1_000),
        ..PartitionConfig::default()
    };
    let short: Vec<Partition> = (1..4)
        .map(|n| log.create_partition(pid(n), short_config.clone()).unwrap())
        .collect();
    let mut kept = Vec::new();
    for round in 0..60 {
        let b = batch(1, 30 + round);
        let out = keep.append(b.clone()).unwrap();
        kept.push((out.base_offset, stored(&b, out.base_offset)));
        for s in &short {
            s.append(batch(2, 300)).unwrap();
        }
    }
    let wait = keep.append(batch(1, 1)).unwrap();
    block_on(wait.durable.wait()).unwrap();
    let before = segment_count(dir.path());
    assert!(before > 10, "{before} segments");
    clock.0.store(1_000_000, Ordering::SeqCst);
    log.run_maintenance().unwrap();
    let after = segment_count(dir.path());
    assert!(after <= 2, "segments {before} -> {after}");
    assert_reads(&keep, &kept);
    log.shutdown().unwrap();

    let log = CommitLog::open(dir.path(), config, clock).unwrap().0;
    assert_reads(&log.partition(pid(0)).unwrap(), &kept);
    assert_eq!(log.partition(pid(1)).unwrap().offsets().log_start, 120);
    log.shutdown().unwrap();
}

#[test]
fn relocated_entries_past_the_checkpoint_are_replayed_on_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::default());
    let config = LogConfig {
        segment_bytes: 4_096,
        ..no_checkpoints()
    };
    let kept = {
        let log = CommitLog::open(dir.path(), config.clone(), clock.clone())
            .unwrap()
            .0;
        let keep = log
            .create_partition(
                pid(0),
                PartitionConfig {
                    retention_ms: None,
                    ..PartitionConfig::default()
                },
            )
            .unwrap();
        let short = log
            .create_partition(
                pid(1),
                PartitionConfig {
                    retention_ms: Some(1),
                    ..PartitionConfig::default()
                },
            )
            .unwrap();
        let mut kept = Vec::new();
        for i in 0..20 {
            let b = batch(1, 20 + i);
            let out = keep.append(b.clone()).unwrap();
            kept.push((out.base_offset, stored(&b, out.base_offset)));
            let out = short.append(batch(3, 400)).unwrap();
            block_on(out.durable.wait()).unwrap();
        }
        clock.0.store(1_000_000, Ordering::SeqCst);
        log.run_maintenance().unwrap();
        kept
        // Crash: the relocated entries were checkpointed by maintenance; appends after are not.
    };
    let log = CommitLog::open(dir.path(), config, clock).unwrap().0;
    let keep = log.partition(pid(0)).unwrap();
    assert_reads(&keep, &kept);
    assert_eq!(keep.append(batch(1, 5)).unwrap().base_offset, 20);
    log.shutdown().unwrap();
}

#[test]
fn append_many_writes_every_partition_once_and_reads_back_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path(), LogConfig::default());
    let parts: Vec<Partition> = (0..5)
        .map(|n| {
            log.create_partition(pid(n), PartitionConfig::default())
                .unwrap()
        })
        .collect();
    let mut expected: Vec<Vec<u8>> = vec![Vec::new(); parts.len()];
    for round in 0..3usize {
        // Reverse order, a refused payload in the middle, and one partition twice.
        let mut items: Vec<(Partition, Bytes)> = parts
            .iter()
            .rev()
            .map(|p| (p.clone(), batch(1 + round, 10 + p.id().partition as usize)))
            .collect();
        items.insert(2, (parts[1].clone(), Bytes::from_static(b"not a batch")));
        let outcomes = log.append_many(&items);
        assert_eq!(outcomes.len(), items.len());
        assert!(matches!(outcomes[2], Err(AppendError::CorruptBatch)));
        for ((p, b), out) in items.iter().zip(outcomes) {
            let Ok(out) = out else { continue };
            block_on(out.durable.wait()).unwrap();
            expected[p.id().partition as usize].extend(stored(b, out.base_offset));
        }
    }
    log.shutdown().unwrap();
    drop(parts);

    let log = open_log(dir.path(), LogConfig::default());
    for (n, bytes) in expected.iter().enumerate() {
        let p = log.partition(pid(n as i32)).unwrap();
        assert_eq!(p.offsets().high_watermark, 6, "partition {n}");
        let r = p.read(0, 1 << 20).unwrap();
        assert_eq!(&r.records[..], &bytes[..], "partition {n}");
    }
    log.shutdown().unwrap();
}

#[test]
fn a_partition_named_twice_in_append_many_gets_both_payloads_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path(), LogConfig::default());
    let p = log
        .create_partition(pid(0), PartitionConfig::default())
        .unwrap();
    let (a, b) = (batch(2, 5), batch(3, 5));
    let outcomes = log.append_many(&[(p.clone(), a.clone()), (p.clone(), b.clone())]);
    let offsets: Vec<i64> = outcomes
        .into_iter()
        .map(|o| {
            let o = o.unwrap();
            block_on(o.durable.wait()).unwrap();
            o.base_offset
        })
        .collect();
    assert_eq!(offsets, vec![0, 2]);
    let mut all = stored(&a, 0);
    all.extend(stored(&b, 2));
    assert_eq!(&p.read(0, 1 << 20).unwrap().records[..], &all[..]);
    log.shutdown().unwrap();
}

/// Wait for a durable wait on another thread. The timeout only keeps a
/// broken build from hanging the suite; the test asserts the outcome.
fn wait_unless_hung(w: DurableWait) -> Result<(), StorageError> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(block_on(w.wait()));
    });
    rx.recv_timeout(Duration::from_secs(60))
        .expect("the durable wait never resolved")
}

/// File I/O that panics in fdatasync or in a write on the thread named.
#[derive(Default)]
struct PanicIo {
    sync_on_thread: Mutex<Option<&'static str>>,
    panic_writes: AtomicBool,
}

impl PanicIo {
    fn on_named_thread(&self) -> bool {
        let target = *self.sync_on_thread.lock().unwrap();
        target.is_some() && std::thread::current().name() == target
    }
}

impl FileIo for PanicIo {
    fn sync_data(&self, file: &File) -> std::io::Result<()> {
        if self.on_named_thread() {
            panic!("injected fdatasync panic");
        }
        file.sync_data()
    }

    fn write_all_at(&self, file: &File, buf: &[u8], offset: u64) -> std::io::Result<()> {
        if self.panic_writes.load(Ordering::SeqCst) {
            panic!("injected write panic");
        }
        std::os::unix::fs::FileExt::write_all_at(file, buf, offset)
    }
}

fn open_with(dir: &Path, config: LogConfig, io: Arc<dyn FileIo>) -> CommitLog {
    CommitLog::open_with_io(dir, config, Arc::new(ManualClock::default()), io)
        .unwrap()
        .0
}

#[test]
fn a_flusher_panic_poisons_the_log_and_fails_every_waiting_append() {
    let dir = tempfile::tempdir().unwrap();
    let io = Arc::new(PanicIo::default());
    let log = open_with(dir.path(), no_checkpoints(), io.clone());
    let p = log
        .create_partition(pid(0), PartitionConfig::default())
        .unwrap();
    wait_unless_hung(p.append(batch(1, 10)).unwrap().durable).unwrap();
    *io.sync_on_thread.lock().unwrap() = Some("weir-flusher");
    let pending = p.append(batch(1, 10)).unwrap();
    let err = wait_unless_hung(pending.durable).unwrap_err();
    assert!(
        err.to_string()
            .contains("the weir-flusher thread panicked: injected fdatasync panic"),
        "{err}"
    );
    assert!(matches!(
        p.append(batch(1, 10)),
        Err(AppendError::Storage(StorageError::Poisoned { .. }))
    ));
    assert_eq!(p.offsets().high_watermark, 1);
}

#[test]
fn a_panic_inside_an_append_poisons_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let io = Arc::new(PanicIo::default());
    let log = open_with(dir.path(), no_checkpoints(), io.clone());
    let a = log
        .create_partition(pid(0), PartitionConfig::default())
        .unwrap();
    let b = log
        .create_partition(pid(1), PartitionConfig::default())
        .unwrap();
    io.panic_writes.store(true, Ordering::SeqCst);
    let panicked =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| a.append(batch(1, 10))));
    assert!(panicked.is_err());
    io.panic_writes.store(false, Ordering::SeqCst);
    // Not only the partition whose lock the panic poisoned: the whole log.
    for p in [&a, &b] {
        let err = p.append(batch(1, 10)).unwrap_err();
        assert!(
            matches!(&err, AppendError::Storage(StorageError::Poisoned { .. })),
            "{err}"
        );
    }
}

/// File I/O that holds back the fsyncs a checkpoint makes (index files and
/// the checkpoint file), whichever thread makes them, and says when one is
/// waiting.
#[derive(Default)]
struct CheckpointGate {
    state: Mutex<(bool, bool)>, // (held, a checkpoint fsync is waiting)
    changed: Condvar,
}

impl CheckpointGate {
    fn set_held(&self, held: bool) {
        self.state.lock().unwrap().0 = held;
        self.changed.notify_all();
    }

    fn wait_until_blocked(&self) {
        let st = self.state.lock().unwrap();
        let (st, timeout) = self
            .changed
            .wait_timeout_while(st, Duration::from_secs(60), |s| !s.1)
            .unwrap();
        assert!(
            !timeout.timed_out() && st.1,
            "no checkpoint fsync ever started"
        );
    }
}

impl FileIo for CheckpointGate {
    fn sync_data(&self, file: &File) -> std::io::Result<()> {
        if is_checkpoint_file(file) {
            let mut st = self.state.lock().unwrap();
            st.1 = true;
            self.changed.notify_all();
            while st.0 {
                st = self.changed.wait(st).unwrap();
            }
        }
        file.sync_data()
    }
}

/// An index file or the checkpoint file, by the name its descriptor points at.
fn is_checkpoint_file(file: &File) -> bool {
    use std::os::fd::AsRawFd;
    let path = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()));
    path.is_ok_and(|p| {
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        name.ends_with(".idx") || name == crate::store::CHECKPOINT_TMP_FILE
    })
}

#[test]
fn a_produce_is_acknowledged_while_a_checkpoint_fsync_is_blocked() {
    let dir = tempfile::tempdir().unwrap();
    let io = Arc::new(CheckpointGate::default());
    let config = LogConfig {
        index_checkpoint_interval_ms: 1,
        ..LogConfig::default()
    };
    let log = open_with(dir.path(), config, io.clone());
    let p = log
        .create_partition(pid(0), PartitionConfig::default())
        .unwrap();
    io.set_held(true);
    // The first append makes a checkpoint due; its fsync then hangs.
    wait_unless_hung(p.append(batch(1, 10)).unwrap().durable).unwrap();
    io.wait_until_blocked();
    let out = p.append(batch(2, 10)).unwrap();
    wait_unless_hung(out.durable).unwrap();
    assert_eq!(p.offsets().high_watermark, 3);
    io.set_held(false);
    log.shutdown().unwrap();
}

#[test]
fn an_index_entry_that_names_the_wrong_batch_poisons_the_log_on_read() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path(), no_checkpoints());
    let p = log
        .create_partition(pid(0), PartitionConfig::default())
        .unwrap();
    fill(&p, 2, 10); // batches at offsets 0 and 1
    {
        // Memory and disk disagree: batch 1's entry points at batch 0.
        let mut st = p.inner.state.lock().unwrap();
        let hot = st.index_mut().hot_mut();
        let first = hot[0].position;
        hot[1].position = first;
    }
    let err = p.read(1, 1).unwrap_err();
    assert!(err.to_string().contains("invariant broken"), "{err}");
    // Reads found it; writes stop.
    assert!(matches!(
        p.append(batch(1, 10)),
        Err(AppendError::Storage(StorageError::Poisoned { .. }))
    ));
}

#[test]
fn a_batch_whose_stored_base_offset_was_damaged_poisons_the_log_on_read() {
    // Found by the log_recovery fuzz target: a batch's base offset is
    // outside its CRC, so damage there was served as a batch at another
    // offset.
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path(), no_checkpoints());
    let p = log
        .create_partition(pid(0), PartitionConfig::default())
        .unwrap();
    fill(&p, 2, 10); // batches at offsets 0 and 1
    let position = p.inner.state.lock().unwrap().index_mut().hot_mut()[1].position;
    // On disk, batch 1 now says it starts at offset 0; its entry header
    // still names batch 1.
    let segment = dir
        .path()
        .join("log")
        .join(crate::log::segment_file_name(0));
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(segment)
        .unwrap();
    let at =
        crate::format::SEGMENT_HEADER_BYTES + position + crate::format::ENTRY_HEADER_BYTES as u64;
    std::os::unix::fs::FileExt::write_all_at(&file, &0i64.to_be_bytes(), at).unwrap();
    assert!(
        !p.read(0, 1).unwrap().records.is_empty(),
        "batch 0 still reads"
    );
    let err = p.read(1, 1).unwrap_err();
    assert!(err.to_string().contains("invariant broken"), "{err}");
}

#[test]
fn an_index_entry_of_an_impossible_size_poisons_the_log_on_read_before_allocating() {
    // Found by the log_recovery fuzz target: a damaged entry's size sized
    // the read buffer (4 GiB).
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path(), no_checkpoints());
    let p = log
        .create_partition(pid(0), PartitionConfig::default())
        .unwrap();
    fill(&p, 2, 10); // batches at offsets 0 and 1
    p.inner.state.lock().unwrap().index_mut().hot_mut()[1].size = u32::MAX;
    let err = p.read(1, 1).unwrap_err();
    assert!(err.to_string().contains("invariant broken"), "{err}");
}

#[test]
fn an_index_entry_at_the_last_positions_fails_the_read_without_overflowing() {
    // Found by the log_recovery fuzz target: a damaged entry's position
    // overflowed its end position.
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path(), no_checkpoints());
    let p = log
        .create_partition(pid(0), PartitionConfig::default())
        .unwrap();
    fill(&p, 2, 10); // batches at offsets 0 and 1
    p.inner.state.lock().unwrap().index_mut().hot_mut()[0].position = u64::MAX - 8;
    assert!(p.read(0, 1 << 20).is_err());
}

/// File I/O that runs a hook once, when the checkpoint file is fdatasync'd
/// (the checkpoint has read every partition and is about to be renamed).
#[derive(Default)]
struct CheckpointHook {
    hook: Mutex<Option<Box<dyn FnOnce() + Send>>>,
}

impl FileIo for CheckpointHook {
    fn sync_data(&self, file: &File) -> std::io::Result<()> {
        use std::os::fd::AsRawFd;
        let path = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()));
        let name = path.ok().and_then(|p| p.file_name().map(|n| n.to_owned()));
        if name.is_some_and(|n| n == crate::store::CHECKPOINT_TMP_FILE) {
            let hook = self.hook.lock().unwrap().take();
            if let Some(hook) = hook {
                hook();
            }
        }
        file.sync_data()
    }
}

#[test]
fn segments_stay_until_a_checkpoint_records_the_log_start_that_freed_them() {
    let dir = tempfile::tempdir().unwrap();
    let io = Arc::new(CheckpointHook::default());
    let log = open_with(dir.path(), small_segments_no_checkpoints(), io.clone());
    let keep = PartitionConfig {
        retention_ms: None,
        ..PartitionConfig::default()
    };
    let p = log.create_partition(pid(0), keep).unwrap();
    let expected = fill(&p, 30, 100);
    let before = segment_count(dir.path());
    assert!(before > 3, "{before} segments");
    // DeleteRecords moves the log start in memory while maintenance's
    // checkpoint is being written, and has not written its own yet.
    let racing = p.clone();
    *io.hook.lock().unwrap() = Some(Box::new(move || {
        let mut st = racing.inner.state.lock().unwrap();
        let hw = st.hw();
        st.advance_log_start(hw, racing.log.index_io()).unwrap();
    }));
    log.run_maintenance().unwrap();
    assert_eq!(segment_count(dir.path()), before, "segments deleted early");
    drop((log, p)); // crash: the move was never recorded

    let log = open_log(dir.path(), small_segments_no_checkpoints());
    let p = log.partition(pid(0)).unwrap();
    assert_eq!(p.offsets().log_start, 0);
    assert_reads(&p, &expected);
    // Once a checkpoint records a move, the next run frees the segments.
    p.delete_records_before(-1).unwrap();
    log.run_maintenance().unwrap();
    assert!(segment_count(dir.path()) < before);
    log.shutdown().unwrap();
}

fn small_segments_no_checkpoints() -> LogConfig {
    LogConfig {
        segment_bytes: 2_000,
        ..no_checkpoints()
    }
}

/// Descriptors of this process open on `.idx` files under `dir`.
fn open_index_descriptors(dir: &Path) -> usize {
    let dir = dir.canonicalize().unwrap();
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|p| p.starts_with(&dir) && p.extension().is_some_and(|x| x == "idx"))
        .count()
}

#[test]
fn index_descriptors_stay_under_the_cap_across_writes_restarts_and_recovery() {
    const CAP: usize = 8;
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        index_open_files_max: CAP,
        ..no_checkpoints()
    };
    let check = |when: &str| {
        let open = open_index_descriptors(dir.path());
        assert!(open <= CAP, "{open} index files open {when}");
    };
    let log = open_log(dir.path(), config.clone());
    let parts: Vec<Partition> = (0..200)
        .map(|n| {
            log.create_partition(pid(n), PartitionConfig::default())
                .unwrap()
        })
        .collect();
    check("after creating 200 partitions");
    let mut expected: Vec<Vec<(i64, Vec<u8>)>> = vec![Vec::new(); parts.len()];
    let append_round = |expected: &mut Vec<Vec<(i64, Vec<u8>)>>, parts: &[Partition]| {
        for (n, p) in parts.iter().enumerate() {
            expected[n].extend(fill(p, 1, 10 + n % 7));
        }
    };
    append_round(&mut expected, &parts);
    check("after appends");
    log.run_maintenance().unwrap(); // a checkpoint writes every index file
    check("after a checkpoint");
    append_round(&mut expected, &parts);
    log.shutdown().unwrap();
    drop((log, parts));

    let log = open_log(dir.path(), config.clone());
    check("after a clean restart");
    let parts: Vec<Partition> = (0..200).map(|n| log.partition(pid(n)).unwrap()).collect();
    for (p, e) in parts.iter().zip(&expected) {
        assert_reads(p, e);
    }
    // Entries past the checkpoint are re-indexed by recovery, through the cap too.
    append_round(&mut expected, &parts);
    let crashed = weak_handles(&log);
    drop((log, parts)); // crash
    // The crashed log's descriptors close once its threads let go of it.
    wait_until_dropped(&crashed);

    let log = open_log(dir.path(), config);
    check("after recovery");
    for (n, e) in expected.iter().enumerate() {
        let p = log.partition(pid(n as i32)).unwrap();
        assert_reads(&p, e);
        assert_eq!(p.offsets().log_end, e.last().unwrap().0 + 1);
    }
    log.run_maintenance().unwrap();
    check("after recovery's checkpoint");
    log.shutdown().unwrap();
}

#[test]
fn dropping_every_handle_ends_the_background_threads() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path(), LogConfig::default());
    let p = log
        .create_partition(pid(0), PartitionConfig::default())
        .unwrap();
    wait_unless_hung(p.append(batch(1, 10)).unwrap().durable).unwrap();
    let weak = weak_handles(&log);
    drop((log, p));
    wait_until_dropped(&weak);
}

/// Wait until the checkpoint thread lets go of a store, and the flusher of
/// its log, once every handle was dropped.
fn wait_until_dropped(handles: &(Weak<crate::store::Store>, Weak<crate::log::LogInner>)) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while handles.0.upgrade().is_some() || handles.1.upgrade().is_some() {
        assert!(Instant::now() < deadline, "the log was never dropped");
        std::thread::yield_now();
    }
}

/// What [`wait_until_dropped`] watches.
fn weak_handles(log: &CommitLog) -> (Weak<crate::store::Store>, Weak<crate::log::LogInner>) {
    (Arc::downgrade(&log.inner), Arc::downgrade(&log.inner.log))
}

#[test]
fn a_checkpoint_thread_panic_poisons_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let io = Arc::new(PanicIo::default());
    let config = LogConfig {
        index_checkpoint_interval_ms: 1,
        ..LogConfig::default()
    };
    let log = open_with(dir.path(), config, io.clone());
    let p = log
        .create_partition(pid(0), PartitionConfig::default())
        .unwrap();
    *io.sync_on_thread.lock().unwrap() = Some("weir-checkpoint");
    // Appends make checkpoints due; the first one panics in its fsync.
    let deadline = Instant::now() + Duration::from_secs(60);
    let err = loop {
        assert!(
            Instant::now() < deadline,
            "the panic never poisoned the log"
        );
        match p.append(batch(1, 10)) {
            Ok(out) => {
                let _ = wait_unless_hung(out.durable);
            }
            Err(e) => break e,
        }
    };
    assert!(
        err.to_string()
            .contains("the weir-checkpoint thread panicked: injected fdatasync panic"),
        "{err}"
    );
}

#[test]
fn a_new_partitions_torn_index_header_is_rewritten_but_a_checkpointed_one_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let index = |n: i32| crate::recovery::index_path(&dir.path().join("index"), pid(n));
    {
        let log = open_log(dir.path(), no_checkpoints());
        log.create_partitions(&[pid(0)], PartitionConfig::default())
            .unwrap();
        let weak = weak_handles(&log);
        drop(log); // crash before any checkpoint names the partition
        wait_until_dropped(&weak);
    }
    // Its header never reached the disk (the file length did).
    std::fs::write(index(0), [0u8; 64]).unwrap();
    let log = open_log(dir.path(), no_checkpoints());
    let p = log.partition(pid(0)).unwrap();
    assert_eq!(p.offsets().log_end, 0);
    wait_unless_hung(p.append(batch(1, 10)).unwrap().durable).unwrap();
    log.shutdown().unwrap();
    drop((log, p));
    // Once a checkpoint vouches for the file, a damaged header is corruption.
    std::fs::write(index(0), [0u8; 64]).unwrap();
    let err = CommitLog::open(
        dir.path(),
        no_checkpoints(),
        Arc::new(ManualClock::default()),
    )
    .err()
    .unwrap();
    assert!(matches!(err, StorageError::Corrupt { .. }), "{err}");
}
