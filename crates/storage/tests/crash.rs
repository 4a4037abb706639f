//! Crash tests: a child process appends (and runs the cleaner) while the
//! parent SIGKILLs it at random points; after every kill the parent reopens
//! the log and checks that every append the child reported durable reads
//! back exactly once, at its offset.
//!
//! The child is this test binary re-executed with `--exact <test> --nocapture`
//! and `WEIR_CRASH_CHILD` naming the data directory.

// Test code: a failed step should panic and fail the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::records::Compression;
use rand::Rng;
use uuid::Uuid;
use weir_storage::{Clock, CommitLog, LogConfig, PartitionConfig, PartitionId, SystemClock};

const CHILD_ENV: &str = "WEIR_CRASH_CHILD";
const KILLS: usize = 24;
const TEST_SECONDS_MAX: u64 = 45;

fn pid(n: i32) -> PartitionId {
    PartitionId {
        topic_id: Uuid::from_u128(0xc4a5),
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

fn long() -> PartitionConfig {
    PartitionConfig {
        retention_ms: None,
        ..PartitionConfig::default()
    }
}

fn short() -> PartitionConfig {
    PartitionConfig {
        retention_ms: Some(1),
        ..PartitionConfig::default()
    }
}

/// The child: append forever to one long-retention partition beside three
/// short-retention ones, reporting each durable append, and run maintenance
/// (retention, cleaner, segment deletion) often.
fn child(dir: &Path) -> ! {
    let (log, _) = CommitLog::open(dir, config(), Arc::new(SystemClock)).unwrap();
    let keep = log.create_partition(pid(0), long()).unwrap();
    let others: Vec<_> = (1..4)
        .map(|n| log.create_partition(pid(n), short()).unwrap())
        .collect();
    let clock = SystemClock;
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut i: u64 = 0;
    loop {
        let seq = keep.offsets().log_end;
        let value = Bytes::from(format!("record-{seq}-{i}"));
        let now = clock.now_ms();
        let out = keep
            .append(common::batch(
                std::slice::from_ref(&value),
                &[now],
                Compression::None,
            ))
            .unwrap();
        for o in &others {
            let filler = vec![Bytes::from(vec![b'x'; 700]); 2];
            o.append(common::batch(&filler, &[now, now], Compression::None))
                .unwrap();
        }
        rt.block_on(out.durable.wait()).unwrap();
        println!(
            "durable {} {}",
            out.base_offset,
            String::from_utf8_lossy(&value)
        );
        i += 1;
        if i.is_multiple_of(7) {
            log.run_maintenance().unwrap();
        }
    }
}

#[test]
fn sigkill_during_appends_and_cleaning_loses_no_durable_append() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        child(Path::new(&dir));
    }
    let dir = tempfile::tempdir().unwrap();
    let deadline = Instant::now() + Duration::from_secs(TEST_SECONDS_MAX);
    let mut durable: HashMap<i64, Bytes> = HashMap::new();
    let mut rng = rand::rng();
    let mut kills = 0;
    while kills < KILLS && Instant::now() < deadline {
        // Kill after a random number of durable appends: anywhere in the child's work.
        let kill_after = rng.random_range(1..80);
        common::run_child_until_killed(
            "sigkill_during_appends_and_cleaning_loses_no_durable_append",
            CHILD_ENV,
            dir.path(),
            kill_after,
            deadline,
            |line| {
                let Some(rest) = line.strip_prefix("durable ") else {
                    return false;
                };
                let (offset, value) = rest.split_once(' ').unwrap();
                durable.insert(offset.parse().unwrap(), Bytes::from(value.to_string()));
                true
            },
        );
        kills += 1;
        verify(dir.path(), &durable);
    }
    assert!(
        kills >= 20,
        "only {kills} kills within {TEST_SECONDS_MAX} s"
    );
    assert!(!durable.is_empty());
}

/// Reopen the log and check every durable append is there exactly once.
fn verify(dir: &Path, durable: &HashMap<i64, Bytes>) {
    let (log, _) = CommitLog::open(dir, config(), Arc::new(SystemClock)).unwrap();
    let keep = log
        .partition(pid(0))
        .expect("the long-retention partition survives");
    let records = common::decode(keep.read(0, usize::MAX).unwrap().records);
    let mut by_value: HashMap<Bytes, i64> = HashMap::new();
    for (offset, value) in &records {
        assert!(
            by_value.insert(value.clone(), *offset).is_none(),
            "{value:?} appears twice"
        );
    }
    for (offset, value) in durable {
        assert_eq!(
            by_value.get(value),
            Some(offset),
            "durable append {value:?} at {offset} lost or moved"
        );
    }
    let offsets: Vec<i64> = records.iter().map(|(o, _)| *o).collect();
    assert!(
        offsets.windows(2).all(|w| w[1] == w[0] + 1),
        "offsets are not contiguous"
    );
    log.shutdown().unwrap();
}
