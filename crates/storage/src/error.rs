//! Storage errors, one enum per operation family.

use std::sync::Arc;

/// A failure of the log itself (I/O, corruption found on disk, poisoned log).
#[derive(Debug, Clone, thiserror::Error)]
pub enum StorageError {
    /// An I/O call failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        source: Arc<std::io::Error>,
    },
    /// The partition was truncated below a batch before the high watermark
    /// reached it (this replica stopped leading it): the batch is gone, and
    /// the producer must send it again to the new leader.
    #[error(
        "the batch ending at offset {end_offset} was truncated away (the log now ends at \
         {truncated_to}) before it was committed"
    )]
    Truncated {
        /// The offset after the batch that was waiting.
        end_offset: i64,
        /// Where the truncation left the log end.
        truncated_to: i64,
    },
    /// A previous write or fsync failed; the log refuses writes until restart.
    #[error("commit log refuses writes after an earlier failure: {reason}")]
    Poisoned {
        /// The original failure.
        reason: Arc<str>,
    },
    /// A file (or a checksummed entry in it) is in a format version, or of an
    /// entry kind, that this build does not know: a newer Weir wrote it.
    /// Nothing was repaired or removed; the data directory is as it was.
    #[error(
        "{file}: {detail}. A newer version of Weir wrote this data directory; \
         run that version (or a later one) on it, do not downgrade. Nothing was changed on disk"
    )]
    UnsupportedFormat {
        /// The file.
        file: String,
        /// What was found (the unknown version or entry kind, and where).
        detail: String,
    },
    /// Recovery must write (cut a torn tail, re-index it, write a checkpoint)
    /// and the filesystem holding the data directory is full. Nothing that
    /// was durable is lost; the broker cannot start until there is space.
    #[error(
        "the filesystem holding {dir} is full ({detail}). Recovery needs to write before the \
         broker can start. Free space on that filesystem outside the data directory (or grow \
         it), then start again. Inside the data directory only checkpoint.tmp, \
         checkpoint.log-starts.tmp, leader-epochs.tmp, index/*.idx.tmp and \
         producer-state/*.snap.tmp are safe to remove; never remove segments (log/*.log), \
         index files (index/*.idx), txn-index/, the checkpoint, leader-epochs or meta/ by hand: to \
         free their space, delete topics or records through the broker once it runs"
    )]
    DiskFull {
        /// The data directory.
        dir: String,
        /// The write that failed.
        detail: String,
    },
    /// Data on disk does not match its checksum or format where it must.
    #[error("corrupt {file}: {detail}")]
    Corrupt {
        /// The file.
        file: String,
        /// What is wrong.
        detail: String,
    },
}

impl StorageError {
    /// A failed atomic file replace, as an I/O error naming `context`, the
    /// step and the path.
    pub(crate) fn from_replace(
        context: impl std::fmt::Display,
        e: weir_sync::ReplaceError,
    ) -> Self {
        Self::Io {
            context: format!("{context}: {} {}", e.step, e.path.display()),
            source: Arc::new(e.source),
        }
    }
}

/// A std lock that a panic poisoned: the panic poisoned the log too (see
/// `log::PanicGuard`), and nothing may be read past it.
impl From<weir_sync::PoisonedLock> for StorageError {
    fn from(e: weir_sync::PoisonedLock) -> Self {
        Self::Poisoned {
            reason: Arc::from(e.to_string()),
        }
    }
}

/// Why an append was refused.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AppendError {
    /// The batch's CRC32C does not match (Kafka's CORRUPT_MESSAGE).
    #[error("record batch CRC mismatch")]
    CorruptBatch,
    /// Not a well-formed RecordBatch v2 (Kafka's INVALID_RECORD / CORRUPT_MESSAGE).
    #[error("invalid record batch: {0}")]
    InvalidBatch(&'static str),
    /// The batch names a compression codec Kafka does not define (ids 5-7:
    /// UNSUPPORTED_COMPRESSION_TYPE).
    #[error("unknown compression codec {codec} in the batch attributes")]
    UnsupportedCompression {
        /// The codec id (attributes & 7).
        codec: i16,
    },
    /// The batch announces more records than its bytes can hold, or more
    /// than one batch may (INVALID_RECORD).
    #[error("a batch of {bytes} bytes cannot hold the {count} records it announces")]
    InvalidRecordCount {
        /// The record count in the header.
        count: i32,
        /// The batch length.
        bytes: usize,
    },
    /// The batch exceeds `max.message.bytes` (MESSAGE_TOO_LARGE).
    #[error("batch of {size} bytes exceeds max.message.bytes {max}")]
    MessageTooLarge {
        /// Batch size.
        size: usize,
        /// The limit.
        max: u32,
    },
    /// Idempotent producer sequence gap (OUT_OF_ORDER_SEQUENCE_NUMBER).
    #[error("producer {producer_id} sent sequence {got}, expected {expected}")]
    OutOfOrderSequence {
        /// The producer.
        producer_id: i64,
        /// The next sequence the partition expects.
        expected: i32,
        /// The sequence received.
        got: i32,
    },
    /// An older epoch of a producer id that has a newer one (INVALID_PRODUCER_EPOCH).
    #[error("producer {producer_id} epoch {got} is older than {current}")]
    InvalidProducerEpoch {
        /// The producer.
        producer_id: i64,
        /// The epoch the partition knows.
        current: i16,
        /// The epoch received.
        got: i16,
    },
    /// A producer in a transaction wrote a batch that is not transactional,
    /// or a transactional batch came without a producer id
    /// (INVALID_TXN_STATE).
    #[error("producer {producer_id}: {reason}")]
    InvalidTxnState {
        /// The producer (-1 when the batch names none).
        producer_id: i64,
        /// What was wrong.
        reason: &'static str,
    },
    /// A transaction marker from a coordinator older than the one that
    /// wrote the producer's last marker (TRANSACTION_COORDINATOR_FENCED).
    #[error("producer {producer_id}: coordinator epoch {got} is older than {current}")]
    CoordinatorFenced {
        /// The producer.
        producer_id: i64,
        /// The coordinator epoch of the producer's last marker.
        current: i32,
        /// The coordinator epoch of the refused marker.
        got: i32,
    },
    /// The partition is being truncated; retry once it is done
    /// (NOT_LEADER_OR_FOLLOWER: the client refreshes its metadata and retries).
    #[error("the partition is being truncated")]
    Truncating,
    /// A replica append whose batch does not start at or after the log end
    /// (offsets must only grow; INVALID_RECORD).
    #[error("replica batch at offset {got} does not follow the log end {log_end}")]
    ReplicaOffsetOrder {
        /// The partition's log end.
        log_end: i64,
        /// The batch's base offset.
        got: i64,
    },
    /// The log failed (KAFKA_STORAGE_ERROR).
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Why a truncation was refused.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TruncateError {
    /// Below the log-start offset: nothing there to keep a boundary at.
    #[error("cannot truncate to {offset}: below the log-start offset {log_start}")]
    BelowLogStart {
        /// The requested offset.
        offset: i64,
        /// The partition's log-start offset.
        log_start: i64,
    },
    /// Below the log end: a log starts afresh only past every batch it holds.
    #[error("cannot start the log afresh at {offset}: below its log end {log_end}")]
    BelowLogEnd {
        /// The requested offset.
        offset: i64,
        /// The partition's log end.
        log_end: i64,
    },
    /// The log failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Why a read was refused.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ReadError {
    /// The offset is below the log start or past the log end (OFFSET_OUT_OF_RANGE).
    #[error("offset {offset} is outside [{log_start}, {log_end}]")]
    OffsetOutOfRange {
        /// The requested offset.
        offset: i64,
        /// The partition's log-start offset.
        log_start: i64,
        /// The partition's high watermark.
        log_end: i64,
    },
    /// The log failed (KAFKA_STORAGE_ERROR).
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Why a leader epoch was not set ([`crate::Partition::set_leader_epoch`]).
#[derive(Debug, Clone, thiserror::Error)]
pub enum EpochError {
    /// Leader epochs are never negative.
    #[error("leader epoch {epoch} is negative")]
    Invalid {
        /// The epoch asked for.
        epoch: i32,
    },
    /// The epoch is below the partition's current one: a leader epoch never
    /// goes back (Kafka fences the older leader).
    #[error("leader epoch {epoch} is older than the partition's {current}")]
    Stale {
        /// The epoch asked for.
        epoch: i32,
        /// The partition's leader epoch.
        current: i32,
    },
    /// The log failed, or refuses writes; the epoch may hold in memory but
    /// is not durable (KAFKA_STORAGE_ERROR).
    #[error(transparent)]
    Storage(#[from] StorageError),
}
