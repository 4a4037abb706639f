//! On-disk format compatibility (docs/format.md, "Versions").
//!
//! `tests/fixtures/<generation>/` holds a small data directory written by the
//! build of each format generation:
//! - `v1`: segment version 1, index version 1, checkpoint version 1 (written
//!   before the segment version was bumped; its segments hold kind-3 entries).
//! - `v2`: segment version 2, index version 1, checkpoint version 1.
//! - `v3`: segment version 3 (truncation entries), index version 2 (running
//!   maximum timestamps), checkpoint version 2 (live bytes and segment use),
//!   leader-epoch file version 1; partition 0 moves to leader epoch 1 before
//!   its last appends.
//! - `v4`: as `v3`, plus aborted-transaction file version 1 and producer-state
//!   snapshot version 1 (current): partition 3 holds a committed, an aborted
//!   and an open transaction between plain batches, so the clean shutdown
//!   left `txn-index/<topic>-3.txn` and `producer-state/<topic>-3-<offset>.snap`.
//! - `v5`: as `v4`, with index version 3 (current): the same layout, bumped
//!   because bit 14 of an entry's attributes marks delayed records, which a
//!   build that reads only index version 2 would serve at once.
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
use weir_storage::{
    AbortedTxn, Clock, CommitLog, LogConfig, Partition, PartitionConfig, PartitionId,
    ProducerSummary, ReadOutcome, StorageError, TxnMarker,
};

/// The generation this build writes.
const CURRENT: &str = "v5";
/// Every generation there has been.
const GENERATIONS: [&str; 5] = ["v1", "v2", "v3", "v4", "v5"];
const BLESS_ENV: &str = "WEIR_BLESS_FORMAT_FIXTURE";
/// The index version after the one this build writes (3).
const NEXT_INDEX_VERSION: u32 = 4;
const T0_MS: i64 = 1_700_000_000_000;
/// Bytes of a segment file header; an entry's kind byte is at entry offset 8.
const SEGMENT_HEADER_BYTES: usize = 16;
/// The partition that holds transactions, from `v4` on.
const TXN_PARTITION: i32 = 3;
/// Its log end after the workload.
const TXN_LOG_END: i64 = 14;
/// The epoch of the transaction coordinator that writes every marker.
const COORDINATOR_EPOCH: i32 = 2;
/// The producer whose transaction is committed.
const COMMITS: TxnProducer = TxnProducer { id: 11, epoch: 0 };
/// The producer whose transaction is aborted.
const ABORTS: TxnProducer = TxnProducer { id: 12, epoch: 3 };
/// The producer whose transaction is still open at shutdown.
const LEAVES_OPEN: TxnProducer = TxnProducer { id: 13, epoch: 1 };

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

/// A transactional producer: its id and epoch.
#[derive(Debug, Clone, Copy)]
struct TxnProducer {
    id: i64,
    epoch: i16,
}

fn keyed_batch(records: &[(Option<String>, String)], timestamp: i64) -> Bytes {
    encode_batch(records, timestamp, None)
}

/// A transactional batch of `producer`, its first record at sequence `first_sequence`.
fn txn_batch(values: &[&str], timestamp: i64, producer: TxnProducer, first_sequence: i32) -> Bytes {
    encode_batch(
        &unkeyed(values),
        timestamp,
        Some((producer, first_sequence)),
    )
}

fn unkeyed(values: &[&str]) -> Vec<(Option<String>, String)> {
    values.iter().map(|v| (None, v.to_string())).collect()
}

/// One batch of `records`; transactional when a producer and its first
/// sequence are given.
fn encode_batch(
    records: &[(Option<String>, String)],
    timestamp: i64,
    txn: Option<(TxnProducer, i32)>,
) -> Bytes {
    let records: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(i, (k, v))| Record {
            transactional: txn.is_some(),
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: txn.map_or(-1, |(p, _)| p.id),
            producer_epoch: txn.map_or(-1, |(p, _)| p.epoch),
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // The encoder keeps records in one batch while offset - sequence is constant.
            sequence: txn.map_or(-1, |(_, first)| first) + i as i32,
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
/// consumer reads it from the log start (records of every transaction,
/// markers left out): (log start, records).
type Expected = BTreeMap<i32, (i64, Vec<Seen>)>;

/// The workload's partitions, and every record appended to each with the
/// number of its batch.
struct Workload {
    parts: BTreeMap<i32, Partition>,
    appended: BTreeMap<i32, Vec<(usize, Seen)>>,
    batches: usize,
}

impl Workload {
    /// Append `batch`, which holds `records`, to partition `n` and wait
    /// until it is durable; returns its base offset.
    fn append(&mut self, n: i32, records: Vec<(Option<String>, String)>, batch: Bytes) -> i64 {
        let out = self.parts[&n].append(batch).unwrap();
        common::block_on(out.durable.wait()).unwrap();
        for (i, (k, v)) in records.into_iter().enumerate() {
            self.appended.entry(n).or_default().push((
                self.batches,
                Seen {
                    offset: out.base_offset + i as i64,
                    key: k.map(Bytes::from),
                    value: Bytes::from(v),
                },
            ));
        }
        self.batches += 1;
        out.base_offset
    }

    fn append_plain(&mut self, n: i32, records: Vec<(Option<String>, String)>, ts: i64) -> i64 {
        let batch = keyed_batch(&records, ts);
        self.append(n, records, batch)
    }

    fn append_txn(&mut self, values: &[&str], ts: i64, producer: TxnProducer, seq: i32) -> i64 {
        let batch = txn_batch(values, ts, producer, seq);
        self.append(TXN_PARTITION, unkeyed(values), batch)
    }

    /// End `producer`'s transaction; returns the marker's offset.
    fn mark(&mut self, producer: TxnProducer, commit: bool) -> i64 {
        let marker = TxnMarker {
            commit,
            coordinator_epoch: COORDINATOR_EPOCH,
        };
        let out = self.parts[&TXN_PARTITION]
            .append_marker(producer.id, producer.epoch, marker)
            .unwrap();
        common::block_on(out.durable.wait()).unwrap();
        out.base_offset
    }
}

/// The workload every fixture was written with: three partitions sharing
/// 1 KiB segments (several rolls), DeleteRecords on partition 1, a
/// compaction of partition 2 (kind-3 entries), then more appends; from `v4`
/// on, transactions in partition 3 ([`write_transactions`]).
fn write_workload(dir: &Path) -> Expected {
    let log = open(dir).unwrap();
    let mut w = Workload {
        parts: (0..=TXN_PARTITION)
            .map(|n| {
                let p = log.create_partition(pid(n), keep_forever(n == 2));
                (n, p.unwrap())
            })
            .collect(),
        appended: BTreeMap::new(),
        batches: 0,
    };
    for i in 0..8usize {
        let ts = T0_MS + i as i64;
        let plain = (0..1 + i % 3)
            .map(|j| (None, format!("p0-{i}-{j}")))
            .collect();
        w.append_plain(0, plain, ts);
        if i < 5 {
            let plain = (0..2).map(|j| (None, format!("p1-{i}-{j}"))).collect();
            w.append_plain(1, plain, ts);
        }
        let keyed = (0..2)
            .map(|j| (Some(format!("k{}", (2 * i + j) % 3)), format!("p2-{i}-{j}")))
            .collect();
        w.append_plain(2, keyed, ts);
    }
    assert_eq!(w.parts[&1].delete_records_before(4).unwrap(), 4);
    w.parts[&0].set_leader_epoch(1).unwrap();
    log.run_maintenance().unwrap();
    w.append_plain(0, vec![(None, "p0-late".into())], T0_MS + 10);
    w.append_plain(2, vec![(Some("k0".into()), "p2-late".into())], T0_MS + 10);
    write_transactions(&mut w);
    // A clean shutdown: it writes partition 3's producer-state snapshot.
    log.shutdown().unwrap();

    let mut expected = Expected::new();
    for (n, records) in w.appended {
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

/// Partition 3's batches (`v4` on), at the offsets in the comments. The
/// open transaction begins before the abort's marker, so that abort's last
/// stable offset (9) is not just past its marker.
fn write_transactions(w: &mut Workload) {
    let ts = T0_MS + 20;
    let n = TXN_PARTITION;
    let bases = [
        w.append_plain(n, unkeyed(&["p3-plain-0", "p3-plain-1"]), ts), // 0..=1
        w.append_txn(&["p3-committed-0", "p3-committed-1"], ts + 1, COMMITS, 0), // 2..=3
        w.append_plain(n, unkeyed(&["p3-plain-2"]), ts + 2),           // 4
        w.append_txn(&["p3-committed-2"], ts + 3, COMMITS, 2),         // 5
        w.mark(COMMITS, true),                                         // 6
        w.append_txn(&["p3-aborted-0", "p3-aborted-1"], ts + 4, ABORTS, 0), // 7..=8
        w.append_txn(&["p3-open-0"], ts + 5, LEAVES_OPEN, 0),          // 9
        w.mark(ABORTS, false),                                         // 10
        w.append_plain(n, unkeyed(&["p3-plain-3"]), ts + 6),           // 11
        w.append_txn(&["p3-open-1", "p3-open-2"], ts + 7, LEAVES_OPEN, 1), // 12..=13
    ];
    assert_eq!(bases, [0, 2, 4, 5, 6, 7, 9, 10, 11, 12]);
    assert_eq!(w.parts[&n].offsets().log_end, TXN_LOG_END);
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

/// The records every partition holds, read from its log start (markers
/// left out).
fn read_all(log: &CommitLog) -> Expected {
    let mut out = Expected::new();
    for id in log.partitions() {
        let n = id.partition;
        let p = log.partition(id).expect("partition missing");
        let offsets = p.offsets();
        let mut bytes = p.read(offsets.log_start, 1 << 20).unwrap().records;
        let mut seen = Vec::new();
        while !bytes.is_empty() {
            for r in RecordBatchDecoder::decode(&mut bytes).unwrap().records {
                if r.offset >= offsets.log_start && !r.control {
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

/// Whether `generation` keeps leader epochs (`v3` on); before, every batch
/// carries epoch 0.
fn keeps_leader_epochs(generation: &str) -> bool {
    !matches!(generation, "v1" | "v2")
}

/// Whether `generation` holds the transactional partition (`v4` on).
fn has_transactions(generation: &str) -> bool {
    !matches!(generation, "v1" | "v2" | "v3")
}

/// The transactional partition's aborted-transaction file, relative to the
/// data directory.
fn txn_index_file() -> PathBuf {
    let topic = pid(TXN_PARTITION).topic_id.hyphenated();
    PathBuf::from(format!("txn-index/{topic}-{TXN_PARTITION}.txn"))
}

/// The transactional partition's producer-state snapshot, taken at its log
/// end by the shutdown, relative to the data directory.
fn snapshot_file() -> PathBuf {
    let topic = pid(TXN_PARTITION).topic_id.hyphenated();
    PathBuf::from(format!(
        "producer-state/{topic}-{TXN_PARTITION}-{TXN_LOG_END:020}.snap"
    ))
}

/// The files in `dir`'s folder `folder`, relative to `dir`, sorted.
fn files_in(dir: &Path, folder: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join(folder))
        .unwrap()
        .map(|e| Path::new(folder).join(e.unwrap().file_name()))
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

/// What a read_committed consumer makes of `read`: the records it keeps
/// and those it drops as aborted (a transactional record of a producer
/// inside one of the named aborted transactions), each as (offset, value);
/// markers left out.
type Consumed = (Vec<(i64, String)>, Vec<(i64, String)>);

fn consume(read: ReadOutcome) -> Consumed {
    let mut bytes = read.records;
    let (mut kept, mut dropped) = (Vec::new(), Vec::new());
    while !bytes.is_empty() {
        for r in RecordBatchDecoder::decode(&mut bytes).unwrap().records {
            if r.control {
                continue;
            }
            let aborted = r.transactional
                && read.aborted.iter().any(|a| {
                    a.producer_id == r.producer_id
                        && (a.first_offset..=a.last_offset).contains(&r.offset)
                });
            let value = String::from_utf8_lossy(&r.value.unwrap_or_default()).into_owned();
            if aborted {
                dropped.push((r.offset, value));
            } else {
                kept.push((r.offset, value));
            }
        }
    }
    (kept, dropped)
}

fn records(list: &[(i64, &str)]) -> Vec<(i64, String)> {
    list.iter().map(|(o, v)| (*o, v.to_string())).collect()
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
        let mut want = expected.clone();
        if !has_transactions(generation) {
            want.remove(&TXN_PARTITION);
        }
        assert_eq!(read_all(&log), want, "{generation}");
        // Before v3 no leader epoch was kept, and every batch carries epoch 0.
        let p0 = log.partition(pid(0)).unwrap();
        let epoch_0_end = if keeps_leader_epochs(generation) {
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
        // Every index file is now of the current version (3), so a build
        // that would ignore delay marks refuses the directory.
        for path in files_in(dir.path(), "index") {
            let header = std::fs::read(dir.path().join(&path)).unwrap();
            assert_eq!(&header[..12], b"WEIRIDX\0\0\0\0\x03", "{}", path.display());
        }
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
    // The aborted-transaction file and the producer-state snapshot are
    // compared as written, with no normalizing: the topic id is fixed, the
    // snapshot lists producers sorted by id with their batches' own
    // timestamps, and the fixed clock stamps the markers. Only the
    // checkpoint's partition order follows a hash map.
    assert!(want.contains_key(&txn_index_file()), "{CURRENT}");
    assert!(want.contains_key(&snapshot_file()), "{CURRENT}");
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

/// From `v4` on, partition 3 reopens with its transactions as the workload
/// left them: the open one holds the last stable offset back, the aborted
/// one is named to read_committed readers, and producer state comes back
/// from the snapshot.
#[test]
fn a_fixtures_transactions_reopen_open_committed_and_aborted_as_written() {
    for generation in GENERATIONS.into_iter().filter(|g| has_transactions(g)) {
        // The clean shutdown left the aborted-transaction file and the snapshot.
        let dir = fixture(generation);
        let txn_index = files_in(&dir, "txn-index");
        assert_eq!(txn_index, [txn_index_file()], "{generation}");
        let snapshots = files_in(&dir, "producer-state");
        assert_eq!(snapshots, [snapshot_file()], "{generation}");

        let dir = tempfile::tempdir().unwrap();
        copy_dir(&fixture(generation), dir.path());
        let log = open(dir.path()).unwrap();
        let p = log.partition(pid(TXN_PARTITION)).unwrap();
        let o = p.offsets();
        assert_eq!(o.log_end, TXN_LOG_END, "{generation}");
        assert_eq!(o.high_watermark, TXN_LOG_END, "{generation}");
        // LEAVES_OPEN's transaction began at 9.
        assert_eq!(o.last_stable, 9, "{generation}");
        assert_eq!(p.open_transaction(LEAVES_OPEN.id), Some(9));
        assert_eq!(p.open_transaction(COMMITS.id), None);
        assert_eq!(p.open_transaction(ABORTS.id), None);

        let read = p.read_committed(0, 1 << 20).unwrap();
        assert_eq!(read.offsets.last_stable, 9);
        // The abort's marker (10) is past the last stable offset, but its
        // records are not, so it is named. Its own last stable offset is 9:
        // LEAVES_OPEN's transaction was open when the marker was written.
        let abort = AbortedTxn {
            producer_id: ABORTS.id,
            first_offset: 7,
            last_offset: 10,
            last_stable_offset: 9,
        };
        assert_eq!(read.aborted, [abort], "{generation}");
        let (kept, dropped) = consume(read);
        let want_kept = [
            (0, "p3-plain-0"),
            (1, "p3-plain-1"),
            (2, "p3-committed-0"),
            (3, "p3-committed-1"),
            (4, "p3-plain-2"),
            (5, "p3-committed-2"),
        ];
        assert_eq!(kept, records(&want_kept), "{generation}");
        let want_dropped = [(7, "p3-aborted-0"), (8, "p3-aborted-1")];
        assert_eq!(dropped, records(&want_dropped), "{generation}");
        // A read_uncommitted read names no abort.
        assert!(p.read(0, 1 << 20).unwrap().aborted.is_empty());

        let summary =
            |producer: TxnProducer, last_sequence, ms_after_t0, coordinator_epoch, open| {
                ProducerSummary {
                    producer_id: producer.id,
                    producer_epoch: producer.epoch,
                    last_sequence,
                    last_timestamp: T0_MS + ms_after_t0,
                    coordinator_epoch,
                    txn_start_offset: open,
                }
            };
        // The coordinator epochs come from the snapshot: a replay of the
        // index alone does not know them.
        let want_producers = vec![
            summary(COMMITS, 2, 23, COORDINATOR_EPOCH, None),
            summary(ABORTS, 1, 24, COORDINATOR_EPOCH, None),
            summary(LEAVES_OPEN, 2, 27, -1, Some(9)),
        ];
        assert_eq!(p.producers(), want_producers, "{generation}");

        // The open transaction is live: its commit releases the last
        // stable offset, and its records are read.
        let commit = TxnMarker {
            commit: true,
            coordinator_epoch: COORDINATOR_EPOCH,
        };
        let out = p
            .append_marker(LEAVES_OPEN.id, LEAVES_OPEN.epoch, commit)
            .unwrap();
        common::block_on(out.durable.wait()).unwrap();
        assert_eq!(out.base_offset, TXN_LOG_END);
        assert_eq!(p.offsets().last_stable, TXN_LOG_END + 1);
        let (kept, dropped) = consume(p.read_committed(9, 1 << 20).unwrap());
        let want_kept = [
            (9, "p3-open-0"),
            (11, "p3-plain-3"),
            (12, "p3-open-1"),
            (13, "p3-open-2"),
        ];
        assert_eq!(kept, records(&want_kept), "{generation}");
        assert!(dropped.is_empty(), "{generation}: {dropped:?}");
        log.shutdown().unwrap();
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
    set_u32(&index, 8, NEXT_INDEX_VERSION);
    assert_refused_unchanged(dir.path(), "-1.idx");
}

#[test]
fn a_leader_epoch_file_of_a_future_version_refuses_to_open_and_changes_nothing() {
    let dir = current_copy();
    set_u32(&dir.path().join("leader-epochs"), 8, 2);
    assert_refused_unchanged(dir.path(), "leader-epochs");
}

// `txn_tests.rs` refuses a header-only file of version 99 in a log the unit
// test wrote; these two bump the version of the fixture's own files and
// check that no file in the directory changes, and the message.

#[test]
fn an_aborted_transaction_file_of_a_future_version_refuses_to_open_and_changes_nothing() {
    let dir = current_copy();
    set_u32(&dir.path().join(txn_index_file()), 8, 2);
    assert_refused_unchanged(dir.path(), &format!("-{TXN_PARTITION}.txn"));
}

#[test]
fn a_producer_state_snapshot_of_a_future_version_refuses_to_open_and_changes_nothing() {
    let dir = current_copy();
    // The CRC, which covers the version, stays as version 1 computed it: a
    // reader cannot know where a newer version keeps its checksum, so the
    // version must be judged first, and the file not skipped as damaged.
    set_u32(&dir.path().join(snapshot_file()), 8, 2);
    assert_refused_unchanged(dir.path(), ".snap");
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
    set_u32(&index, 8, NEXT_INDEX_VERSION);
    assert_refused_unchanged(dir.path(), "-12345.idx");
}
