//! On-disk format compatibility (docs/format.md, "Versions").
//!
//! `tests/fixtures/<generation>/` holds a small data directory written by the
//! build of each format generation:
//! - `v1`: segment version 1, index version 1, checkpoint version 1 (written
//!   before the segment version was bumped; its segments hold kind-3 entries).
//! - `v2`: segment version 2, index version 1, checkpoint version 1.
//! - `v3`: segment version 3 (truncation entries), index version 2 (running
//!   maximum timestamps), checkpoint version 2 (live bytes and segment use),
//!   leader-epoch file version 1 (current); partition 0 moves to leader epoch 1
//!   before its last appends.
//!
//! Every fixture must open and read back every record with its expected
//! value. The current build must write the current fixture byte for byte (a
//! layout change without a version bump fails here): run this file with
//! `WEIR_BLESS_FORMAT_FIXTURE=1` only when you have bumped a version and added
//! the new generation. Data a newer Weir wrote (an unknown file version, or a
//! checksummed entry of an unknown kind) must refuse to open and leave every
//! file as it was.

// Test code: a failed step should panic and fail the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use uuid::Uuid;
use weir_storage::{Clock, CommitLog, LogConfig, PartitionConfig, PartitionId, StorageError};

/// The generation this build writes.
const CURRENT: &str = "v3";
/// Every generation there has been.
const GENERATIONS: [&str; 3] = ["v1", "v2", "v3"];
const BLESS_ENV: &str = "WEIR_BLESS_FORMAT_FIXTURE";
const T0_MS: i64 = 1_700_000_000_000;
/// Bytes of a segment file header; an entry's kind byte is at entry offset 8.
const SEGMENT_HEADER_BYTES: usize = 16;

struct FixedClock;

impl Clock for FixedClock {
    fn now_ms(&self) -> i64 {
        T0_MS
    }
}

fn pid(n: i32) -> PartitionId {
    PartitionId {
        topic_id: Uuid::from_u128(0x5eed_f1c5),
        partition: n,
    }
}

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 1024,
        index_checkpoint_interval_ms: 3_600_000,
        ..LogConfig::default()
    }
}

fn keep_forever(compact: bool) -> PartitionConfig {
    PartitionConfig {
        retention_ms: None,
        compact,
        ..PartitionConfig::default()
    }
}

fn open(dir: &Path) -> Result<CommitLog, StorageError> {
    CommitLog::open(dir, config(), Arc::new(FixedClock)).map(|(log, _)| log)
}

/// A record as a consumer sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    offset: i64,
    key: Option<Bytes>,
    value: Bytes,
}

fn keyed_batch(records: &[(Option<String>, String)], timestamp: i64) -> Bytes {
    let records: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(i, (k, v))| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: i as i32 - 1,
            timestamp,
            key: k.clone().map(Bytes::from),
            value: Some(Bytes::from(v.clone())),
            headers: IndexMap::new(),
        })
        .collect();
    let mut buf = BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression: Compression::None,
    };
    RecordBatchEncoder::encode(&mut buf, &records, &options).unwrap();
    buf.freeze()
}

/// What each partition of the fixture holds after the workload, as a
/// consumer reads it from the log start: (log start, records).
type Expected = BTreeMap<i32, (i64, Vec<Seen>)>;

/// The workload every fixture was written with: three partitions sharing
/// 1 KiB segments (several rolls), DeleteRecords on partition 1, a
/// compaction of partition 2 (kind-3 entries), then more appends.
fn write_workload(dir: &Path) -> Expected {
    let log = open(dir).unwrap();
    let parts: Vec<_> = (0..3)
        .map(|n| log.create_partition(pid(n), keep_forever(n == 2)).unwrap())
        .collect();
    let mut appended: BTreeMap<i32, Vec<(usize, Seen)>> = BTreeMap::new();
    let mut batch_no = 0usize;
    let mut append = |n: i32, records: Vec<(Option<String>, String)>, ts: i64| {
        let p = &parts[n as usize];
        let out = p.append(keyed_batch(&records, ts)).unwrap();
        common::block_on(out.durable.wait()).unwrap();
        for (i, (k, v)) in records.into_iter().enumerate() {
            appended.entry(n).or_default().push((
                batch_no,
                Seen {
                    offset: out.base_offset + i as i64,
                    key: k.map(Bytes::from),
                    value: Bytes::from(v),
                },
            ));
        }
        batch_no += 1;
    };
    for i in 0..8usize {
        let ts = T0_MS + i as i64;
        let plain = (0..1 + i % 3)
            .map(|j| (None, format!("p0-{i}-{j}")))
            .collect();
        append(0, plain, ts);
        if i < 5 {
            append(
                1,
                (0..2).map(|j| (None, format!("p1-{i}-{j}"))).collect(),
                ts,
            );
        }
        let keyed = (0..2)
            .map(|j| (Some(format!("k{}", (2 * i + j) % 3)), format!("p2-{i}-{j}")))
            .collect();
        append(2, keyed, ts);
    }
    assert_eq!(parts[1].delete_records_before(4).unwrap(), 4);
    parts[0].set_leader_epoch(1).unwrap();
    log.run_maintenance().unwrap();
    append(0, vec![(None, "p0-late".into())], T0_MS + 10);
    append(2, vec![(Some("k0".into()), "p2-late".into())], T0_MS + 10);
    log.shutdown().unwrap();

    let mut expected = Expected::new();
    for (n, records) in appended {
        let log_start = if n == 1 { 4 } else { 0 };
        let mut seen: Vec<Seen> = records.iter().map(|(_, s)| s.clone()).collect();
        if n == 2 {
            // Compacted before its last append.
            let late = seen.pop();
            seen = compaction_model(&records[..records.len() - 1]);
            seen.extend(late);
        }
        seen.retain(|s| s.offset >= log_start);
        expected.insert(n, (log_start, seen));
    }
    expected
}

/// What compaction keeps of `records` (each with its batch number): every
/// record of the newest batch (never rewritten), and elsewhere only the
/// newest record of each key.
fn compaction_model(records: &[(usize, Seen)]) -> Vec<Seen> {
    let newest_batch = records.iter().map(|(b, _)| *b).max().unwrap();
    let mut newest_of_key = BTreeMap::new();
    for (_, s) in records {
        newest_of_key.insert(s.key.clone(), s.offset);
    }
    records
        .iter()
        .filter(|(b, s)| *b == newest_batch || newest_of_key.get(&s.key) == Some(&s.offset))
        .map(|(_, s)| s.clone())
        .collect()
}

/// The records every partition holds, read from its log start.
fn read_all(log: &CommitLog) -> Expected {
    let mut out = Expected::new();
    for n in 0..3 {
        let p = log.partition(pid(n)).expect("partition missing");
        let offsets = p.offsets();
        let mut bytes = p.read(offsets.log_start, 1 << 20).unwrap().records;
        let mut seen = Vec::new();
        while !bytes.is_empty() {
            for r in RecordBatchDecoder::decode(&mut bytes).unwrap().records {
                if r.offset >= offsets.log_start {
                    seen.push(Seen {
                        offset: r.offset,
                        key: r.key,
                        value: r.value.unwrap_or_default(),
                    });
                }
            }
        }
        assert_eq!(
            offsets.high_watermark, offsets.log_end,
            "partition {n}: high watermark"
        );
        out.insert(n, (offsets.log_start, seen));
    }
    out
}

fn fixture(generation: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(generation)
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

/// Every file under `dir` with its bytes, by path relative to `dir`.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for ent in std::fs::read_dir(dir).unwrap() {
            let path = ent.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                let rel = path.strip_prefix(root).unwrap().to_path_buf();
                out.insert(rel, std::fs::read(&path).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// The checkpoint without what depends on hash-map order: its partition
/// records (56 bytes and 24 per segment use, in version 2) sorted, its CRC dropped.
fn normalized_checkpoint(bytes: &[u8]) -> Vec<u8> {
    let (header, rest) = bytes.split_at(24);
    let body = &rest[..rest.len() - 4];
    let mut records: Vec<&[u8]> = Vec::new();
    let mut at = 0;
    while at < body.len() {
        let uses = u32::from_be_bytes(body[at + 48..at + 52].try_into().unwrap()) as usize;
        let len = 56 + 24 * uses;
        records.push(&body[at..at + len]);
        at += len;
    }
    records.sort();
    let mut out = header.to_vec();
    out.extend(records.concat());
    out
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("log"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}

/// The kind byte of every entry in every segment.
fn entry_kinds(dir: &Path) -> Vec<u8> {
    let mut kinds = Vec::new();
    for path in segment_files(dir) {
        let bytes = std::fs::read(path).unwrap();
        let mut at = SEGMENT_HEADER_BYTES;
        while at + 9 <= bytes.len() {
            let len = u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
            kinds.push(bytes[at + 8]);
            at += 8 + len;
        }
    }
    kinds
}

/// The log position just past the last entry (segment base + bytes after the header).
fn log_end_position(dir: &Path) -> u64 {
    let last = segment_files(dir).pop().unwrap();
    let base: u64 = last.file_stem().unwrap().to_str().unwrap().parse().unwrap();
    base + std::fs::metadata(&last).unwrap().len() - SEGMENT_HEADER_BYTES as u64
}

/// A whole entry (valid CRC) of `kind` for partition 0 of the fixture.
fn entry(kind: u8, base_offset: i64, payload: &[u8]) -> Vec<u8> {
    let mut e = Vec::new();
    e.extend_from_slice(&((32 + payload.len()) as u32).to_be_bytes());
    e.extend_from_slice(&[0; 4]);
    e.push(kind);
    e.extend_from_slice(&[0; 3]);
    e.extend_from_slice(pid(0).topic_id.as_bytes());
    e.extend_from_slice(&0i32.to_be_bytes());
    e.extend_from_slice(&base_offset.to_be_bytes());
    e.extend_from_slice(payload);
    let crc = crc32c::crc32c(&e[8..]);
    e[4..8].copy_from_slice(&crc.to_be_bytes());
    e
}

fn append_to(path: &Path, bytes: &[u8]) {
    let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    std::io::Write::write_all(&mut f, bytes).unwrap();
}

fn set_u32(path: &Path, at: usize, value: u32) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[at..at + 4].copy_from_slice(&value.to_be_bytes());
    std::fs::write(path, bytes).unwrap();
}

/// A copy of the current fixture, to damage.
fn current_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&fixture(CURRENT), dir.path());
    dir
}

/// Opening `dir` must fail as data from a newer Weir, naming `file_part`,
/// and change nothing.
fn assert_refused_unchanged(dir: &Path, file_part: &str) {
    let before = snapshot(dir);
    let err = open(dir).expect_err("a newer format must refuse to open");
    let StorageError::UnsupportedFormat { file, .. } = &err else {
        panic!("expected UnsupportedFormat, got {err}");
    };
    assert!(file.contains(file_part), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("newer version of Weir") && text.contains("do not downgrade"),
        "{text}"
    );
    assert!(snapshot(dir) == before, "a refused open changed files");
}

#[test]
fn every_fixture_generation_reads_back_every_record() {
    let tmp = tempfile::tempdir().unwrap();
    let expected = write_workload(tmp.path());
    for generation in GENERATIONS {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(&fixture(generation), dir.path());
        // The fixture is what the test says it is: rolls, and compaction's kind-3 entries.
        assert!(segment_files(dir.path()).len() >= 3, "{generation}");
        assert!(entry_kinds(dir.path()).contains(&3), "{generation}");
        let log = open(dir.path()).unwrap();
        assert_eq!(read_all(&log), expected, "{generation}");
        // Before v3 no leader epoch was kept, and every batch carries epoch 0.
        let p0 = log.partition(pid(0)).unwrap();
        let epoch_0_end = if generation == "v3" {
            expected[&0].1.last().unwrap().offset
        } else {
            p0.offsets().log_end
        };
        assert_eq!(
            p0.end_offset_for_epoch(0),
            Some((0, epoch_0_end)),
            "{generation}"
        );
        let p1 = log.partition(pid(1)).unwrap();
        assert_eq!(p1.end_offset_for_epoch(0), Some((0, p1.offsets().log_end)));
        assert_eq!(p1.epoch_for_offset(4), Some(0), "{generation}");
        // Appends go on after the fixture's data, and survive a restart.
        let p = log.partition(pid(0)).unwrap();
        let end = p.offsets().log_end;
        let out = p
            .append(keyed_batch(&[(None, "after".into())], T0_MS))
            .unwrap();
        common::block_on(out.durable.wait()).unwrap();
        assert_eq!(out.base_offset, end, "{generation}");
        log.shutdown().unwrap();
        let log = open(dir.path()).unwrap();
        let again = read_all(&log);
        assert_eq!(again[&1], expected[&1], "{generation}");
        assert_eq!(again[&0].1.last().unwrap().offset, end, "{generation}");
        log.shutdown().unwrap();
    }
}

#[test]
fn an_older_segment_version_is_continued_in_a_current_one() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&fixture("v1"), dir.path());
    let old = segment_files(dir.path());
    let log = open(dir.path()).unwrap();
    log.shutdown().unwrap();
    let now = segment_files(dir.path());
    let newest = now.last().unwrap();
    assert!(!old.contains(newest), "no new segment after {old:?}");
    let header = std::fs::read(newest).unwrap();
    assert_eq!(&header[..12], b"WEIRSEG\0\0\0\0\x03");
}

#[test]
fn this_build_writes_the_current_fixture_byte_for_byte() {
    let written = tempfile::tempdir().unwrap();
    write_workload(written.path());
    if std::env::var_os(BLESS_ENV).is_some() {
        let target = fixture(CURRENT);
        let _ = std::fs::remove_dir_all(&target);
        copy_dir(written.path(), &target);
        return;
    }
    let mut got = snapshot(written.path());
    let mut want = snapshot(&fixture(CURRENT));
    for files in [&mut got, &mut want] {
        let cp = files.get_mut(Path::new("checkpoint")).unwrap();
        *cp = normalized_checkpoint(cp);
    }
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>()
    );
    for (path, bytes) in &want {
        assert!(
            got[path] == *bytes,
            "{} differs from the {CURRENT} fixture: a format change needs a version bump \
             and a new fixture generation (docs/format.md)",
            path.display()
        );
    }
}

#[test]
fn an_entry_of_an_unknown_kind_refuses_to_open_and_changes_nothing() {
    let dir = current_copy();
    let last = segment_files(dir.path()).pop().unwrap();
    // Past the checkpoint, so recovery scans it. A future kind may carry no batch.
    append_to(&last, &entry(9, 1_000, b"a future entry"));
    assert_refused_unchanged(dir.path(), "log/");
}

#[test]
fn a_torn_entry_with_an_unknown_kind_byte_is_cut_as_a_torn_tail() {
    let dir = current_copy();
    let last = segment_files(dir.path()).pop().unwrap();
    let len_before = std::fs::metadata(&last).unwrap().len();
    let mut torn = entry(9, 1_000, b"a future entry");
    let n = torn.len();
    torn[n - 1] ^= 0xff; // the CRC no longer holds
    append_to(&last, &torn);
    let tmp = tempfile::tempdir().unwrap();
    let expected = write_workload(tmp.path());
    let (log, report) = CommitLog::open(dir.path(), config(), Arc::new(FixedClock)).unwrap();
    assert_eq!(report.bytes_truncated, n as u64);
    assert_eq!(read_all(&log), expected);
    log.shutdown().unwrap();
    assert!(std::fs::metadata(&last).unwrap().len() >= len_before);
}

#[test]
fn a_segment_of_a_future_version_refuses_to_open_and_changes_nothing() {
    // Below the checkpoint.
    let dir = current_copy();
    let first = segment_files(dir.path()).remove(0);
    set_u32(&first, 8, 4);
    assert_refused_unchanged(dir.path(), "log/");

    // Past the checkpoint, where a torn header would be cut: a newer Weir's
    // new segment is not a torn one.
    let dir = current_copy();
    let end = log_end_position(dir.path());
    let mut seg = b"WEIRSEG\0".to_vec();
    seg.extend_from_slice(&4u32.to_be_bytes());
    seg.extend_from_slice(&[0; 4]);
    seg.extend(entry(1, 1_000, &[0; 61]));
    std::fs::write(dir.path().join(format!("log/{end:020}.log")), seg).unwrap();
    assert_refused_unchanged(dir.path(), &format!("{end:020}.log"));
}

#[test]
fn an_index_of_a_future_version_refuses_to_open_and_changes_nothing() {
    let dir = current_copy();
    let index = dir
        .path()
        .join(format!("index/{}-1.idx", pid(1).topic_id.hyphenated()));
    set_u32(&index, 8, 3);
    assert_refused_unchanged(dir.path(), "-1.idx");
}

#[test]
fn a_leader_epoch_file_of_a_future_version_refuses_to_open_and_changes_nothing() {
    let dir = current_copy();
    set_u32(&dir.path().join("leader-epochs"), 8, 2);
    assert_refused_unchanged(dir.path(), "leader-epochs");
}

#[test]
fn a_checkpoint_of_a_future_version_refuses_to_open_and_changes_nothing() {
    let dir = current_copy();
    let checkpoint = dir.path().join("checkpoint");
    set_u32(&checkpoint, 8, 3);
    // Also leave a stale temporary checkpoint: a refused open must not remove it.
    std::fs::write(dir.path().join("checkpoint.tmp"), b"half written").unwrap();
    assert_refused_unchanged(dir.path(), "checkpoint");
}

/// Recovery reads index headers on several threads once there are many
/// files: a newer version in any of them still refuses the whole directory.
#[test]
fn a_future_index_among_thousands_refuses_to_open_and_changes_nothing() {
    let dir = current_copy();
    let log = open(dir.path()).unwrap();
    let many: Vec<PartitionId> = (0..20_000)
        .map(|n| PartitionId {
            topic_id: Uuid::from_u128(0xbeef),
            partition: n,
        })
        .collect();
    log.create_partitions(&many, PartitionConfig::default())
        .unwrap();
    log.shutdown().unwrap();
    let index = dir.path().join(format!(
        "index/{}-12345.idx",
        Uuid::from_u128(0xbeef).hyphenated()
    ));
    set_u32(&index, 8, 3);
    assert_refused_unchanged(dir.path(), "-12345.idx");
}
