//! Crash test of log compaction: a child process appends keyed records to a
//! compacted partition (beside short-retention filler, so segments roll and
//! are deleted) and runs maintenance often, while the parent SIGKILLs it at
//! random points. After every kill the parent reopens the log and checks
//! that each key's newest durable value reads back exactly once, at its
//! offset, and that no older value of a key comes after a newer one.
//!
//! The child is this test binary re-executed with `--exact <test> --nocapture`
//! and `WEIR_COMPACTION_CRASH_CHILD` naming the data directory.

// Test code: a failed step should panic and fail the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use rand::Rng;
use uuid::Uuid;
use weir_storage::{Clock, CommitLog, LogConfig, PartitionConfig, PartitionId, SystemClock};

const CHILD_ENV: &str = "WEIR_COMPACTION_CRASH_CHILD";
const TEST_NAME: &str = "sigkill_during_compaction_keeps_every_keys_newest_durable_value";
const KILLS: usize = 24;
const TEST_SECONDS_MAX: u64 = 50;
const KEYS: u64 = 6;

fn pid(n: i32) -> PartitionId {
    PartitionId {
        topic_id: Uuid::from_u128(0xc0ac),
        partition: n,
    }
}

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 16 << 10,
        index_checkpoint_interval_ms: 20,
        ..LogConfig::default()
    }
}

fn compacted() -> PartitionConfig {
    PartitionConfig {
        retention_ms: None,
        compact: true,
        ..PartitionConfig::default()
    }
}

fn short() -> PartitionConfig {
    PartitionConfig {
        retention_ms: Some(1),
        ..PartitionConfig::default()
    }
}

/// One batch of keyed records.
fn keyed_batch(records: &[(String, String)], now: i64, compression: Compression) -> Bytes {
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
            timestamp: now,
            key: Some(Bytes::from(k.clone())),
            value: Some(Bytes::from(v.clone())),
            headers: IndexMap::new(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression,
        },
    )
    .unwrap();
    buf.freeze()
}

/// The child: append keyed records (1 to 3 per batch, various codecs) to a
/// compacted partition, report each durable one, and run maintenance often.
fn child(dir: &Path) -> ! {
    let (log, _) = CommitLog::open(dir, config(), Arc::new(SystemClock)).unwrap();
    let keep = log.create_partition(pid(0), compacted()).unwrap();
    let filler = log.create_partition(pid(1), short()).unwrap();
    let clock = SystemClock;
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let codecs = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];
    let mut rng = rand::rng();
    let mut i: u64 = 0;
    loop {
        let base = keep.offsets().log_end;
        let n = rng.random_range(1..=3);
        // The value names its own offset, so the parent can check placement.
        let records: Vec<(String, String)> = (0..n)
            .map(|j| {
                let key = format!("key-{}", rng.random_range(0..KEYS));
                let value = format!("{}@{}", key, base + j as i64);
                (key, value)
            })
            .collect();
        let now = clock.now_ms();
        let codec = codecs[(i % codecs.len() as u64) as usize];
        let out = keep.append(keyed_batch(&records, now, codec)).unwrap();
        assert_eq!(out.base_offset, base);
        let pad = vec![(String::from("f"), "x".repeat(900))];
        filler
            .append(keyed_batch(&pad, now, Compression::None))
            .unwrap();
        rt.block_on(out.durable.wait()).unwrap();
        for (j, (key, value)) in records.iter().enumerate() {
            println!("durable {} {} {}", base + j as i64, key, value);
        }
        i += 1;
        if i.is_multiple_of(4) {
            log.run_maintenance().unwrap();
        }
    }
}

/// key -> (offset, value) of its newest durable record.
type Newest = HashMap<String, (i64, String)>;

fn note(line: &str, newest: &mut Newest) -> bool {
    let Some(rest) = line.strip_prefix("durable ") else {
        return false;
    };
    let mut parts = rest.splitn(3, ' ');
    let offset: i64 = parts.next().unwrap().parse().unwrap();
    let key = parts.next().unwrap().to_string();
    let value = parts.next().unwrap().to_string();
    let e = newest.entry(key).or_insert((offset, value.clone()));
    if offset >= e.0 {
        *e = (offset, value);
    }
    true
}

#[test]
fn sigkill_during_compaction_keeps_every_keys_newest_durable_value() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        child(Path::new(&dir));
    }
    let dir = tempfile::tempdir().unwrap();
    let deadline = Instant::now() + Duration::from_secs(TEST_SECONDS_MAX);
    let mut newest: Newest = HashMap::new();
    let mut rng = rand::rng();
    let mut kills = 0;
    let mut compacted_seen = false;
    while kills < KILLS && Instant::now() < deadline {
        let kill_after = rng.random_range(1..150);
        common::run_child_until_killed(
            TEST_NAME,
            CHILD_ENV,
            dir.path(),
            kill_after,
            deadline,
            |line| note(line, &mut newest),
        );
        kills += 1;
        compacted_seen |= verify(dir.path(), &newest);
    }
    assert!(
        kills >= 20,
        "only {kills} kills within {TEST_SECONDS_MAX} s"
    );
    assert!(!newest.is_empty());
    assert!(compacted_seen, "compaction never removed a record");
}

/// Reopen the log and check every key's newest durable value. Returns
/// whether compaction had removed any offset.
fn verify(dir: &Path, newest: &Newest) -> bool {
    let (log, _) = CommitLog::open(dir, config(), Arc::new(SystemClock)).unwrap();
    let p = log
        .partition(pid(0))
        .expect("the compacted partition survives");
    let mut bytes = p.read(0, usize::MAX).unwrap().records;
    let mut records = Vec::new();
    while !bytes.is_empty() {
        let set = RecordBatchDecoder::decode(&mut bytes).unwrap();
        for r in set.records {
            let key = String::from_utf8(r.key.unwrap().to_vec()).unwrap();
            let value = String::from_utf8(r.value.unwrap().to_vec()).unwrap();
            records.push((r.offset, key, value));
        }
    }
    let mut values = HashSet::new();
    let mut last_offset_of_key: HashMap<&str, i64> = HashMap::new();
    let mut prev = -1;
    for (offset, key, value) in &records {
        assert!(*offset > prev, "offsets go backwards at {offset}");
        prev = *offset;
        assert!(values.insert(value.as_str()), "{value} appears twice");
        assert_eq!(value, &format!("{key}@{offset}"), "value moved");
        if let Some(last) = last_offset_of_key.insert(key, *offset) {
            assert!(last < *offset, "an older value of {key} after a newer one");
        }
    }
    for (key, (offset, value)) in newest {
        let found = records.iter().filter(|(_, _, v)| v == value).count();
        // Nothing older than the newest durable value may come after it.
        let last = last_offset_of_key.get(key.as_str()).copied().unwrap_or(-1);
        assert!(last >= *offset, "{key}: {last} < {offset}");
        // A newer record of the key that survived the kill before its
        // "durable" line was read may rightly have compacted this one away.
        let expected = if last > *offset { 0..=1 } else { 1..=1 };
        assert!(
            expected.contains(&found),
            "newest durable {value} of {key} at {offset} found {found} times (key's last offset {last})"
        );
    }
    let end = p.offsets().log_end;
    log.shutdown().unwrap();
    (records.len() as i64) < end
}
