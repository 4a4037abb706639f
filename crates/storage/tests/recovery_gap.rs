//! Recovery never leaves an offset gap (issue 7, item 5).
//!
//! The crash image: the checkpoint lies in segment A; the log rolled to
//! segment B; the crash lost A's unsynced tail (at an entry boundary, so no
//! CRC can see it), but B's pages had reached the disk. Nothing past the
//! loss was acknowledged (a sync round fdatasyncs A before B, and answers
//! only when both succeeded), so recovery must end the log where A's valid
//! entries end and drop B: re-indexing B would leave an offset gap and bring
//! back batches no producer was told were stored.
//!
//! The image is built from a real log: every append is made durable, the
//! data directory is copied as a crash would leave it, and A's copy is cut
//! back to the checkpoint position plus `kept` of its tail entries.

// Test code: a failed step should panic and fail the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::records::Compression;
use uuid::Uuid;
use weir_storage::{CommitLog, LogConfig, Partition, PartitionConfig, PartitionId, SystemClock};

const ENTRY_HEADER_BYTES: u64 = 40;

fn pid(n: i32) -> PartitionId {
    PartitionId {
        topic_id: Uuid::from_u128(0x9a9),
        partition: n,
    }
}

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 1_000,
        // Only open and shutdown write checkpoints.
        index_checkpoint_interval_ms: 3_600_000,
        ..LogConfig::default()
    }
}

fn open(dir: &Path) -> (CommitLog, weir_storage::RecoveryReport) {
    CommitLog::open(dir, config(), Arc::new(SystemClock)).unwrap()
}

/// One durable append: (base offset, last offset, entry bytes in the log, stored batch).
struct Appended {
    base: i64,
    last: i64,
    entry_len: u64,
    stored: Vec<u8>,
}

fn append(p: &Partition, tag: &str, records: usize) -> Appended {
    let values: Vec<Bytes> = (0..records)
        .map(|i| Bytes::from(format!("{tag}-{i}")))
        .collect();
    let b = common::batch(&values, &[], Compression::None);
    let out = p.append(b.clone()).unwrap();
    common::block_on(out.durable.wait()).unwrap();
    Appended {
        base: out.base_offset,
        last: out.last_offset,
        entry_len: ENTRY_HEADER_BYTES + b.len() as u64,
        stored: common::stored(&b, out.base_offset),
    }
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("log"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
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

/// Every batch a partition serves from its log start, whole, in order.
fn read_all(p: &Partition) -> Vec<u8> {
    let start = p.offsets().log_start;
    p.read(start, 1 << 20).unwrap().records.to_vec()
}

/// What the crash image was built from.
struct Image {
    dir: tempfile::TempDir,
    /// Partition 0's batches below the checkpoint.
    checkpointed: Vec<Appended>,
    /// Partition 0's batches past the checkpoint in A (the tail a crash may lose).
    a_tail: Vec<Appended>,
    /// Partition 0's batches in B.
    in_b: Vec<Appended>,
    /// Partition 1's batches (all below the checkpoint).
    other: Vec<Appended>,
    /// A's file length at the checkpoint.
    a_len_at_checkpoint: u64,
}

fn build_image() -> Image {
    let dir = tempfile::tempdir().unwrap();
    let (checkpointed, other) = {
        let (log, _) = open(dir.path());
        let p0 = log
            .create_partition(pid(0), PartitionConfig::default())
            .unwrap();
        let p1 = log
            .create_partition(pid(1), PartitionConfig::default())
            .unwrap();
        let c = vec![append(&p0, "ckpt-a", 2), append(&p0, "ckpt-b", 1)];
        let o = vec![append(&p1, "other", 3)];
        log.shutdown().unwrap();
        (c, o)
    };
    // Reopening writes a checkpoint at the log end, inside A.
    let (log, _) = open(dir.path());
    let p0 = log.partition(pid(0)).unwrap();
    assert_eq!(
        segments(dir.path()).len(),
        1,
        "the checkpoint must lie in A"
    );
    let a_len_at_checkpoint = std::fs::metadata(&segments(dir.path())[0]).unwrap().len();
    let (mut a_tail, mut in_b) = (Vec::new(), Vec::new());
    let mut n = 0;
    while in_b.len() < 3 {
        let a = append(&p0, &format!("tail-{n}"), 1 + n % 3);
        n += 1;
        if segments(dir.path()).len() == 1 {
            a_tail.push(a);
        } else {
            in_b.push(a);
        }
    }
    assert_eq!(segments(dir.path()).len(), 2, "exactly one roll");
    assert!(a_tail.len() >= 2, "A must have a tail of several entries");
    // The crash: the image is what was on disk; the process is gone.
    let image = tempfile::tempdir().unwrap();
    copy_dir(dir.path(), image.path());
    drop(log);
    Image {
        dir: image,
        checkpointed,
        a_tail,
        in_b,
        other,
        a_len_at_checkpoint,
    }
}

#[test]
fn a_lost_tail_in_segment_a_drops_segment_b_and_leaves_no_offset_gap() {
    let image = build_image();
    // Keep none of A's tail (the log ends exactly at the checkpoint, the case
    // the old `end != from` exception let through), then some of it.
    for kept in 0..image.a_tail.len() {
        let trial = tempfile::tempdir().unwrap();
        copy_dir(image.dir.path(), trial.path());
        let segs = segments(trial.path());
        let (a, b) = (&segs[0], &segs[1]);
        let a_len = image.a_len_at_checkpoint
            + image.a_tail[..kept]
                .iter()
                .map(|e| e.entry_len)
                .sum::<u64>();
        let b_len = std::fs::metadata(b).unwrap().len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(a)
            .unwrap()
            .set_len(a_len)
            .unwrap();

        let (log, report) = open(trial.path());
        assert_eq!(
            report.bytes_truncated, b_len,
            "kept {kept}: B is dropped whole"
        );
        assert!(!b.exists(), "kept {kept}: B must be removed");
        let p0 = log.partition(pid(0)).unwrap();
        let survivors: Vec<&Appended> = image
            .checkpointed
            .iter()
            .chain(&image.a_tail[..kept])
            .collect();
        let end = survivors.last().unwrap().last + 1;
        assert_eq!(p0.offsets().log_end, end, "kept {kept}");
        assert_eq!(p0.offsets().high_watermark, end, "kept {kept}");
        // Exactly the surviving batches, contiguous: nothing of B came back.
        let want: Vec<u8> = survivors.iter().flat_map(|a| a.stored.clone()).collect();
        assert_eq!(read_all(&p0), want, "kept {kept}");
        for pair in survivors.windows(2) {
            assert_eq!(pair[1].base, pair[0].last + 1, "kept {kept}: offset gap");
        }
        let p1 = log.partition(pid(1)).unwrap();
        assert_eq!(read_all(&p1), image.other[0].stored, "kept {kept}");

        // Appends continue right after the last survivor, and a restart keeps it so.
        let next = append(&p0, "after", 2);
        assert_eq!(
            next.base, end,
            "kept {kept}: the next offset follows without a gap"
        );
        log.shutdown().unwrap();
        let (log, _) = open(trial.path());
        let p0 = log.partition(pid(0)).unwrap();
        let mut want = want;
        want.extend(&next.stored);
        assert_eq!(read_all(&p0), want, "kept {kept}: after a restart");
        assert!(
            image.in_b.iter().all(|b| !want
                .windows(b.stored.len())
                .any(|w| w == b.stored.as_slice())),
            "kept {kept}: a batch from B was resurrected"
        );
        log.shutdown().unwrap();
    }
}
