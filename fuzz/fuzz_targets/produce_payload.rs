//! A produce request's records for one partition: checked as the produce
//! path checks them (`weir_storage::check_produced`: framing, delays, tag
//! summaries), then appended to a real partition, which refuses what is not
//! a valid RecordBatch v2 payload. Neither may panic.
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use weir_storage::{
    CommitLog, DelayBound, LogConfig, Partition, PartitionConfig, PartitionId, SystemClock,
};

/// One log for the whole run, in memory-backed storage when there is one.
fn partition() -> &'static (tempfile::TempDir, CommitLog, Partition) {
    static LOG: OnceLock<(tempfile::TempDir, CommitLog, Partition)> = OnceLock::new();
    LOG.get_or_init(|| {
        let dir = match std::path::Path::new("/dev/shm").is_dir() {
            true => tempfile::tempdir_in("/dev/shm"),
            false => tempfile::tempdir(),
        }
        .expect("a folder for the fuzzed log");
        let (log, _) = CommitLog::open(dir.path(), LogConfig::default(), Arc::new(SystemClock))
            .expect("a fresh log opens");
        let id = PartitionId {
            topic_id: uuid::Uuid::from_u128(1),
            partition: 0,
        };
        let config = PartitionConfig {
            tag_summaries: true,
            ..PartitionConfig::default()
        };
        let partition = log.create_partition(id, config).expect("a partition");
        (dir, log, partition)
    })
}

fuzz_target!(|data: &[u8]| {
    let bound = DelayBound {
        max_ms: 86_400_000,
        config: "delay.max.ms",
    };
    let _ = weir_storage::check_produced(data, 1_700_000_000_000, bound, true);
    let (_, _, partition) = partition();
    let _ = partition.append(bytes::Bytes::copy_from_slice(data));
});
