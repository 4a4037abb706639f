//! Storage throughput without a network: times commit-log appends (durable
//! with group commit, and relaxed), appends spread over many partitions, and
//! reads back from the start, with `std::time` only.
//!
//! Run with `cargo bench -p weir-storage --bench commit_log`. Environment:
//! `WEIR_BENCH_DIR` (where the log is written; default a temporary folder,
//! which should sit on the disk being measured) and `WEIR_BENCH_MB` (bytes of
//! record batches each scenario appends, in MB; default 256).

// A bench is a measuring tool like a test: any failure ends the run loudly.
#![allow(clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use uuid::Uuid;
use weir_storage::{CommitLog, LogConfig, Partition, PartitionConfig, PartitionId, SystemClock};

/// Record value sizes measured, in bytes.
const RECORD_SIZES_BYTES: [usize; 2] = [100, 1024];
/// Bytes of records per batch, near what librdkafka builds at linger.ms=5
/// under load.
const BATCH_BYTES: usize = 256 * 1024;
/// Threads appending at once in the durable scenario: each waits for its own
/// fsync, so group commit has several appends to cover per round.
const DURABLE_WRITERS: usize = 4;
/// Partitions of the many-partition scenario.
const MANY_PARTITIONS: usize = 1_000;
/// Records per batch in the many-partition scenario (a linger window spread
/// over 1,000 partitions leaves each only a few).
const MANY_PARTITIONS_RECORDS_PER_BATCH: usize = 10;
/// Largest read asked for at once, as a fetch's partition_max_bytes would.
const READ_BYTES: usize = 1 << 20;

fn main() {
    let total_mb: usize = std::env::var("WEIR_BENCH_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let total_bytes = total_mb * 1_000_000;
    let root = match std::env::var_os("WEIR_BENCH_DIR") {
        Some(d) => tempfile::tempdir_in(d),
        None => tempfile::tempdir(),
    }
    .expect("a temporary directory for the bench log");
    println!(
        "commit-log bench: {total_mb} MB per scenario, in {}",
        root.path().display()
    );
    println!(
        "{:<44} {:>10} {:>12} {:>10}",
        "scenario", "MB/s", "records/s", "seconds"
    );
    for size in RECORD_SIZES_BYTES {
        let dir = root.path().join(format!("durable-{size}"));
        durable_appends(&dir, size, total_bytes);
        let dir = root.path().join(format!("relaxed-{size}"));
        relaxed_appends_then_reads(&dir, size, total_bytes);
    }
    let dir = root.path().join("many");
    many_partitions(&dir, 1024, total_bytes / 4);
    for size in RECORD_SIZES_BYTES {
        for (name, compression) in [("none", Compression::None), ("lz4", Compression::Lz4)] {
            delay_marks(name, compression, size, total_bytes);
        }
    }
}

/// What every append pays for delayed delivery: the look for delay headers
/// (`weir_storage::delay_mark`, which decompresses a compressed batch) over
/// batches without any, as most are. On one core, no I/O.
fn delay_marks(name: &str, compression: Compression, value_bytes: usize, total_bytes: usize) {
    let per_batch = (BATCH_BYTES / value_bytes).max(1);
    let batch = batch_with(per_batch, value_bytes, compression);
    let batches = (total_bytes / (per_batch * value_bytes)).max(1);
    let started = Instant::now();
    let mut marked = 0usize;
    for _ in 0..batches {
        marked += usize::from(weir_storage::delay_mark(std::hint::black_box(&batch)));
    }
    assert_eq!(marked, 0, "no batch holds a delay header");
    report(
        &format!("delay-mark scan, {name}, {value_bytes} B records"),
        batches * per_batch,
        value_bytes,
        started.elapsed(),
    );
}

/// A log, and one partition per index, all with `config`.
fn open(dir: &Path, partitions: usize, config: &PartitionConfig) -> (CommitLog, Vec<Partition>) {
    let (log, _) = CommitLog::open(dir, LogConfig::default(), Arc::new(SystemClock))
        .expect("the bench log opens");
    let topic_id = Uuid::new_v4();
    let parts = (0..partitions)
        .map(|p| {
            log.create_partition(
                PartitionId {
                    topic_id,
                    partition: p as i32,
                },
                config.clone(),
            )
            .expect("a partition is created")
        })
        .collect();
    (log, parts)
}

/// One uncompressed batch of `count` records of `value_bytes` each.
fn batch(count: usize, value_bytes: usize) -> Bytes {
    batch_with(count, value_bytes, Compression::None)
}

/// One batch of `count` records of `value_bytes` each, compressed with
/// `compression`. Values repeat a record's number, so they compress about
/// as text does, not to nothing.
fn batch_with(count: usize, value_bytes: usize, compression: Compression) -> Bytes {
    let records: Vec<Record> = (0..count)
        .map(|i| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: i as i32 - 1,
            timestamp: 1_700_000_000_000 + i as i64,
            key: None,
            value: Some(Bytes::from(
                format!("{i:x}-{}", i.wrapping_mul(2_654_435_761))
                    .repeat(value_bytes / 8 + 1)
                    .into_bytes()
                    .into_iter()
                    .take(value_bytes)
                    .collect::<Vec<u8>>(),
            )),
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
    .expect("the bench batch encodes");
    buf.freeze()
}

fn report(name: &str, records: usize, value_bytes: usize, elapsed: Duration) {
    let secs = elapsed.as_secs_f64().max(1e-9);
    let mb = (records * value_bytes) as f64 / 1e6;
    println!(
        "{name:<44} {:>10.1} {:>12.0} {:>10.2}",
        mb / secs,
        records as f64 / secs,
        secs
    );
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a tokio runtime for durable waits")
}

/// `DURABLE_WRITERS` threads, each appending a batch and waiting for its
/// fdatasync before the next (flush.messages=1, Weir's default).
fn durable_appends(dir: &Path, value_bytes: usize, total_bytes: usize) {
    let (log, parts) = open(dir, 1, &PartitionConfig::default());
    let per_batch = (BATCH_BYTES / value_bytes).max(1);
    let b = batch(per_batch, value_bytes);
    let batches = (total_bytes / (per_batch * value_bytes)).max(DURABLE_WRITERS);
    let per_writer = batches / DURABLE_WRITERS;
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..DURABLE_WRITERS {
            let part = parts[0].clone();
            let b = b.clone();
            s.spawn(move || {
                let rt = runtime();
                for _ in 0..per_writer {
                    let out = part.append(b.clone()).expect("append");
                    rt.block_on(out.durable.wait()).expect("durable");
                }
            });
        }
    });
    let elapsed = started.elapsed();
    report(
        &format!("append durable, {DURABLE_WRITERS} writers, {value_bytes} B"),
        per_writer * DURABLE_WRITERS * per_batch,
        value_bytes,
        elapsed,
    );
    log.shutdown().expect("shutdown");
}

/// Appends with the flusher left to its own pace (flush.messages large),
/// then reads everything back from offset 0.
fn relaxed_appends_then_reads(dir: &Path, value_bytes: usize, total_bytes: usize) {
    let config = PartitionConfig {
        flush_messages: u64::MAX,
        ..PartitionConfig::default()
    };
    let (log, parts) = open(dir, 1, &config);
    let part = &parts[0];
    let per_batch = (BATCH_BYTES / value_bytes).max(1);
    let b = batch(per_batch, value_bytes);
    let batches = (total_bytes / (per_batch * value_bytes)).max(1);
    let started = Instant::now();
    for _ in 0..batches {
        part.append(b.clone()).expect("append");
    }
    let elapsed = started.elapsed();
    report(
        &format!("append relaxed, 1 writer, {value_bytes} B"),
        batches * per_batch,
        value_bytes,
        elapsed,
    );

    let end = part.offsets().high_watermark;
    let started = Instant::now();
    let mut offset = 0;
    let mut read_batches = 0;
    while offset < end {
        let out = part.read(offset, READ_BYTES).expect("read");
        let n = out.records.len() / b.len();
        assert!(n > 0, "a read below the high watermark returns a batch");
        read_batches += n;
        offset += (n * per_batch) as i64;
    }
    let elapsed = started.elapsed();
    report(
        &format!("read from start (page cache), {value_bytes} B"),
        read_batches * per_batch,
        value_bytes,
        elapsed,
    );
    log.shutdown().expect("shutdown");
}

/// One thread appending small batches round-robin over `MANY_PARTITIONS`,
/// waiting for durability once per round, as one produce request covering
/// every partition would.
fn many_partitions(dir: &Path, value_bytes: usize, total_bytes: usize) {
    let (log, parts) = open(dir, MANY_PARTITIONS, &PartitionConfig::default());
    let b = batch(MANY_PARTITIONS_RECORDS_PER_BATCH, value_bytes);
    let round_bytes = MANY_PARTITIONS * MANY_PARTITIONS_RECORDS_PER_BATCH * value_bytes;
    let rounds = (total_bytes / round_bytes).max(1);
    let rt = runtime();
    let started = Instant::now();
    for _ in 0..rounds {
        let mut last = None;
        for p in &parts {
            last = Some(p.append(b.clone()).expect("append").durable);
        }
        if let Some(wait) = last {
            rt.block_on(wait.wait()).expect("durable");
        }
    }
    let elapsed = started.elapsed();
    report(
        &format!("append durable, {MANY_PARTITIONS} partitions, {value_bytes} B"),
        rounds * MANY_PARTITIONS * MANY_PARTITIONS_RECORDS_PER_BATCH,
        value_bytes,
        elapsed,
    );
    log.shutdown().expect("shutdown");
}
