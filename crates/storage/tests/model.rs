//! Property tests: random appends across partitions and segment rolls read
//! back exactly as appended, and offset and time look-ups agree with a model.

// Test code: a failed step should panic and fail the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::records::Compression;
use proptest::prelude::*;
use uuid::Uuid;
use weir_storage::{CommitLog, LogConfig, PartitionConfig, PartitionId, SystemClock};

/// One append: partition, record timestamps, value size.
#[derive(Debug, Clone)]
struct Op {
    partition: i32,
    timestamps: Vec<i64>,
    value_len: usize,
    compressed: bool,
}

fn op() -> impl Strategy<Value = Op> {
    (
        0..3i32,
        prop::collection::vec(0..1_000i64, 1..6),
        0..700usize,
        any::<bool>(),
    )
        .prop_map(|(partition, timestamps, value_len, compressed)| Op {
            partition,
            timestamps,
            value_len,
            compressed,
        })
}

fn pid(n: i32) -> PartitionId {
    PartitionId {
        topic_id: Uuid::from_u128(0xabc),
        partition: n,
    }
}

/// What the model remembers of one stored batch.
struct Stored {
    base: i64,
    bytes: Vec<u8>,
    timestamps: Vec<i64>,
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn reads_and_lookups_agree_with_a_model(
        ops in prop::collection::vec(op(), 1..60),
        probes in prop::collection::vec((0..3i32, 0..400i64, 0..1_100i64), 1..30),
        reopen in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig { segment_bytes: 4_096, ..LogConfig::default() };
        let relaxed = PartitionConfig { flush_messages: 1_000_000, ..PartitionConfig::default() };
        let (mut log, _) = CommitLog::open(dir.path(), config.clone(), Arc::new(SystemClock)).unwrap();
        let parts: Vec<_> = (0..3).map(|n| log.create_partition(pid(n), relaxed.clone()).unwrap()).collect();
        let mut model: Vec<Vec<Stored>> = vec![Vec::new(), Vec::new(), Vec::new()];
        for (i, o) in ops.iter().enumerate() {
            let values: Vec<Bytes> = o.timestamps.iter().map(|_| Bytes::from(vec![i as u8; o.value_len])).collect();
            let codec = if o.compressed { Compression::Lz4 } else { Compression::None };
            let b = common::batch(&values, &o.timestamps, codec);
            let out = parts[o.partition as usize].append(b.clone()).unwrap();
            model[o.partition as usize].push(Stored {
                base: out.base_offset,
                bytes: common::stored(&b, out.base_offset),
                timestamps: o.timestamps.clone(),
            });
        }
        if reopen {
            log.shutdown().unwrap();
            log = CommitLog::open(dir.path(), config, Arc::new(SystemClock)).unwrap().0;
        }
        for (n, batches) in model.iter().enumerate() {
            let p = log.partition(pid(n as i32)).unwrap();
            p.set_config(relaxed.clone());
            let end = batches.last().map_or(0, |b| b.base + b.timestamps.len() as i64);
            prop_assert_eq!(p.offsets().high_watermark, end);
            // Reading everything returns every batch, in order, byte for byte.
            let all: Vec<u8> = batches.iter().flat_map(|b| b.bytes.clone()).collect();
            if !all.is_empty() {
                prop_assert_eq!(&p.read(0, usize::MAX).unwrap().records[..], &all[..]);
            }
        }
        for (n, offset, ts) in probes {
            let p = log.partition(pid(n)).unwrap();
            let batches = &model[n as usize];
            let end = p.offsets().high_watermark;
            let offset = if end == 0 { 0 } else { offset % (end + 1) };
            let r = p.read(offset, 1).unwrap();
            match batches.iter().find(|b| offset < b.base + b.timestamps.len() as i64) {
                Some(b) => prop_assert_eq!(&r.records[..], &b.bytes[..]),
                None => prop_assert!(r.records.is_empty()),
            }
            let want = batches.iter().find_map(|b| {
                b.timestamps.iter().enumerate().find(|(_, t)| **t >= ts).map(|(i, t)| (b.base + i as i64, *t))
            });
            prop_assert_eq!(p.offset_for_timestamp(ts).unwrap(), want);
        }
        log.shutdown().unwrap();
    }
}
