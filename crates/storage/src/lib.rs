//! Weir's storage engine: one segmented commit log shared by every partition,
//! a queue index per partition, group commit, crash recovery, retention and
//! the cleaner that frees old segments.
//!
//! The crate has no network code. It stores Kafka `RecordBatch` v2 bytes
//! exactly as a producer sent them, patching only the base offset and the
//! partition leader epoch (both outside the CRC-covered range).
//!
//! The public surface is [`CommitLog`] (the broker's one log) and
//! [`Partition`] (a handle on one partition's view of it). See
//! `docs/format.md` for every byte on disk.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use uuid::Uuid;

mod error;

pub use error::{AppendError, ReadError, StorageError};

/// A source of wall-clock time in milliseconds since the Unix epoch.
///
/// Core code never reads the system clock itself, so tests can drive time.
pub trait Clock: Send + Sync + 'static {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;
}

/// The real clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0)
    }
}

/// Identity of a partition on disk: the topic's persistent ID and the partition number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PartitionId {
    /// The topic's UUID (Kafka's topic ID).
    pub topic_id: Uuid,
    /// The partition index within the topic.
    pub partition: i32,
}

/// Broker-wide settings of the commit log.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// Roll the active segment when it reaches this size (`log.segment.bytes`).
    pub segment_bytes: u64,
    /// Roll the active segment when it is this old (`log.roll.ms`).
    pub segment_ms: u64,
    /// How often index files are made durable and the recovery checkpoint advanced.
    pub index_checkpoint_interval_ms: u64,
    /// Upper bound on the bytes one [`Partition::read`] returns, whatever the caller asks.
    pub read_bytes_max: usize,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            segment_bytes: 1 << 30,
            segment_ms: 7 * 24 * 3600 * 1000,
            index_checkpoint_interval_ms: 5_000,
            read_bytes_max: 64 << 20,
        }
    }
}

/// How a partition stamps record timestamps (`message.timestamp.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TimestampType {
    /// Keep the producer's timestamps.
    #[default]
    CreateTime,
    /// Overwrite the batch's max timestamp with the broker's append time.
    LogAppendTime,
}

/// Per-partition settings, derived from the topic's configs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionConfig {
    /// `retention.ms`; `None` keeps data forever.
    pub retention_ms: Option<i64>,
    /// `retention.bytes`; `None` means no size limit.
    pub retention_bytes: Option<i64>,
    /// `flush.messages`: 1 makes every append durable before it is acknowledged
    /// or visible to consumers. Larger values let the background flusher decide.
    pub flush_messages: u64,
    /// `flush.ms`: the longest a relaxed-policy append may stay unsynced.
    pub flush_ms: u64,
    /// `max.message.bytes`: the largest batch accepted.
    pub max_message_bytes: u32,
    /// `message.timestamp.type`.
    pub timestamp_type: TimestampType,
    /// `cleanup.policy` includes `compact`.
    pub compact: bool,
}

impl Default for PartitionConfig {
    fn default() -> Self {
        Self {
            retention_ms: Some(7 * 24 * 3600 * 1000),
            retention_bytes: None,
            flush_messages: 1,
            flush_ms: u64::MAX,
            max_message_bytes: 1_048_588,
            timestamp_type: TimestampType::CreateTime,
            compact: false,
        }
    }
}

/// What recovery found and did when the log was opened.
#[derive(Debug, Clone, Default)]
pub struct RecoveryReport {
    /// Partitions loaded.
    pub partitions: usize,
    /// Commit-log bytes scanned past the last checkpoint.
    pub bytes_scanned: u64,
    /// Bytes cut from the tail because they failed their CRC or were torn.
    pub bytes_truncated: u64,
    /// Index entries rebuilt from the log.
    pub index_entries_rebuilt: u64,
    /// Wall time spent, in milliseconds.
    pub elapsed_ms: u64,
}

/// The offsets of a partition at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PartitionOffsets {
    /// First offset still readable (Kafka's log-start offset).
    pub log_start: i64,
    /// Offset after the last durable, consumer-visible record.
    pub high_watermark: i64,
    /// Last stable offset: equal to the high watermark until transactions exist.
    pub last_stable: i64,
    /// Offset after the last appended record, durable or not.
    pub log_end: i64,
}

/// The result of a successful append.
#[derive(Debug)]
pub struct AppendOutcome {
    /// Offset given to the first record of the batch.
    pub base_offset: i64,
    /// Offset given to the last record of the batch.
    pub last_offset: i64,
    /// The broker's append time when the partition uses `LogAppendTime`, else -1.
    pub log_append_time: i64,
    /// The partition's log-start offset after the append.
    pub log_start_offset: i64,
    /// True when the batch was a retried duplicate of one already stored
    /// (idempotent producer); the offsets are then the original ones.
    pub duplicate: bool,
    /// Resolves once the batch is durable under the partition's flush policy.
    pub durable: DurableWait,
}

/// A wait for the commit log to make a position durable.
#[derive(Debug)]
pub struct DurableWait {
    _private: (),
}

impl DurableWait {
    /// Wait until the append is durable, or fail if the log was poisoned by an
    /// fsync or write error.
    pub async fn wait(self) -> Result<(), StorageError> {
        todo!()
    }
}

/// Batches read from a partition, plus its offsets at read time.
#[derive(Debug, Clone)]
pub struct ReadOutcome {
    /// Whole record batches, concatenated, exactly as stored.
    pub records: Bytes,
    /// The partition's offsets when the read happened.
    pub offsets: PartitionOffsets,
}

/// The broker's commit log. Cheap to clone; all clones share one log.
#[derive(Clone)]
pub struct CommitLog {
    _inner: Arc<()>,
}

impl std::fmt::Debug for CommitLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommitLog").finish_non_exhaustive()
    }
}

impl CommitLog {
    /// Open (or create) the log under `dir`, recovering from a crash if needed.
    pub fn open(
        _dir: &Path,
        _config: LogConfig,
        _clock: Arc<dyn Clock>,
    ) -> Result<(CommitLog, RecoveryReport), StorageError> {
        todo!()
    }

    /// Register a partition (idempotent: an existing one is returned with the new config).
    pub fn create_partition(
        &self,
        _id: PartitionId,
        _config: PartitionConfig,
    ) -> Result<Partition, StorageError> {
        todo!()
    }

    /// A partition registered earlier (before or after a restart).
    pub fn partition(&self, _id: PartitionId) -> Option<Partition> {
        todo!()
    }

    /// Every registered partition.
    pub fn partitions(&self) -> Vec<PartitionId> {
        todo!()
    }

    /// Forget a partition and its index; its log space is reclaimed later.
    pub fn remove_partition(&self, _id: PartitionId) -> Result<(), StorageError> {
        todo!()
    }

    /// A counter that changes whenever any partition's high watermark or
    /// log-start offset moves. Long-polling fetches wait on it.
    pub fn progress(&self) -> tokio::sync::watch::Receiver<u64> {
        todo!()
    }

    /// Apply retention, delete segments with no live data, and relocate the few
    /// live batches that pin old segments. The broker calls it periodically.
    pub fn run_maintenance(&self) -> Result<(), StorageError> {
        todo!()
    }

    /// Make everything durable, write a checkpoint, and stop background threads.
    pub fn shutdown(&self) -> Result<(), StorageError> {
        todo!()
    }
}

/// One partition's view of the commit log. Cheap to clone.
#[derive(Clone)]
pub struct Partition {
    _inner: Arc<()>,
}

impl std::fmt::Debug for Partition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Partition").finish_non_exhaustive()
    }
}

impl Partition {
    /// The partition's identity.
    pub fn id(&self) -> PartitionId {
        todo!()
    }

    /// Validate and append one produce payload (one or more RecordBatch v2),
    /// assigning offsets. Idempotent producers are checked per producer id,
    /// epoch and sequence against the last five batches.
    pub fn append(&self, _batches: Bytes) -> Result<AppendOutcome, AppendError> {
        todo!()
    }

    /// Read whole batches starting with the one that holds `offset`, up to
    /// `max_bytes` (always at least one batch when any is available), never
    /// past the high watermark.
    pub fn read(&self, _offset: i64, _max_bytes: usize) -> Result<ReadOutcome, ReadError> {
        todo!()
    }

    /// Current offsets.
    pub fn offsets(&self) -> PartitionOffsets {
        todo!()
    }

    /// The first offset whose record timestamp is at or after `timestamp`,
    /// with that record's timestamp; `None` when every record is older.
    pub fn offset_for_timestamp(&self, _timestamp: i64) -> Result<Option<(i64, i64)>, ReadError> {
        todo!()
    }

    /// The offset and timestamp of the record with the largest timestamp.
    pub fn max_timestamp(&self) -> Result<Option<(i64, i64)>, ReadError> {
        todo!()
    }

    /// Advance the log-start offset to `offset` (DeleteRecords); durable on return.
    pub fn delete_records_before(&self, _offset: i64) -> Result<i64, ReadError> {
        todo!()
    }

    /// Replace the partition's config (an altered topic config).
    pub fn set_config(&self, _config: PartitionConfig) {
        todo!()
    }
}
