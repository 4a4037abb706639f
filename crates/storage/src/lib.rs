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

mod aborted;
mod batch;
mod compaction;
#[cfg(test)]
mod crash_tests;
mod delay;
mod epochs;
mod error;
mod filtered;
mod format;
mod index;
mod io;
mod log;
mod log_start;
mod maintenance;
mod partition;
mod producer;
mod rebuild;
mod reclaim;
mod records;
mod recovery;
#[cfg(test)]
mod replica_tests;
mod snapshots;
mod store;
mod summary;
mod tags;
#[cfg(test)]
mod tests;
mod timer;
#[cfg(test)]
mod txn_tests;

pub use aborted::AbortedTxn;
pub use batch::{BatchFramingError, Batches, RecordBatchHeader, batches, control_marker};
pub use delay::{
    BadRecord, CopyRecord, DELAY_CANCEL_HEADER, DELAY_ERRORS_MAX, DELAY_MS_HEADER,
    DELAYED_FROM_HEADER, DELIVER_AT_HEADER, DelayBound, DelayCancel, DelayError, DelayScan,
    DelayedCopy, PRODUCE_TIME_HEADER, PendingRecord, PendingView, ValidateError, cancel_batch,
    copies_batch, copy_records, delay_mark, filter_pending, keep_unless_pending, may_hold_delays,
    pending_record, scan_delays, validate,
};
use epochs::UNDEFINED_EPOCH_OFFSET;
pub use error::{AppendError, EpochError, ReadError, StorageError, TruncateError};
pub use producer::{ProducerSummary, TxnMarker};
pub use rebuild::BatchParseError;
pub use records::{
    DecompressError, RecordFrame, RecordFrames, RecordFramingError, decompress_records,
    record_frames,
};
pub use records::{RecordHeader, RecordHeaders, record_headers};
pub use summary::{ProducedCheck, Summaries, check_produced};
pub use tags::{
    FilterError, Filtered, TAG_EXPR_BYTES_MAX, TAG_EXPR_TAGS_MAX, TAG_HEADER, TagExpr,
    TagExprError, filter_batch, skipped_range_batch, tag_summary,
};
pub use timer::{ScanResult, TimerConfig, TimerEntry, TimerError, TimerProgress, TimerStore};

use crate::log::{lock, write};
use crate::partition::PartitionInner;
use crate::store::Store;

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
    /// The most partition index files held open at once; the least recently
    /// used is fsync'd and closed to open another.
    pub index_open_files_max: usize,
    /// Memory the queue indexes of all partitions may hold, shared out
    /// evenly (each keeps at least a few entries). Older entries are read
    /// from the index files when needed.
    pub index_memory_bytes: u64,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            segment_bytes: 1 << 30,
            segment_ms: 7 * 24 * 3600 * 1000,
            index_checkpoint_interval_ms: 5_000,
            read_bytes_max: 64 << 20,
            index_open_files_max: 1024,
            index_memory_bytes: 128 << 20,
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
    /// Keep a tag summary of each batch in the queue index (a Bloom filter
    /// of its `weir.tag` values), so a tag-filtered read skips batches
    /// without a possible match unread. The broker turns it on while views
    /// read the partition; batches appended while it was off may match
    /// anything.
    pub tag_summaries: bool,
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
            tag_summaries: false,
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
    /// Last stable offset: the high watermark, held back to the first
    /// offset of the earliest transaction not yet decided (open, or whose
    /// marker the high watermark has not passed). read_committed reads below it.
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
    /// Resolves once the high watermark passes the batch (what `acks=all` waits for).
    pub committed: CommitWait,
}

impl AppendOutcome {
    /// What a producer's acknowledgement waits for: the high watermark for
    /// `acks=all` (`all_replicas`), local durability under the flush policy
    /// for `acks=1`.
    pub fn ack_wait(self, all_replicas: bool) -> AckWait {
        if all_replicas {
            AckWait::Committed(self.committed)
        } else {
            AckWait::Durable(self.durable)
        }
    }
}

/// The wait behind a producer's acknowledgement (see [`AppendOutcome::ack_wait`]).
#[derive(Debug)]
pub enum AckWait {
    /// `acks=1`: the batch is durable under the flush policy.
    Durable(DurableWait),
    /// `acks=all`: the high watermark passed the batch.
    Committed(CommitWait),
}

impl AckWait {
    /// Wait; fails if the log was poisoned first.
    pub async fn wait(self) -> Result<(), StorageError> {
        match self {
            AckWait::Durable(d) => d.wait().await,
            AckWait::Committed(c) => c.wait().await,
        }
    }
}

/// What a partition's high-watermark watch carries: the high watermark,
/// and the truncations so far, so that a [`CommitWait`] can tell that the
/// batch it waits for was cut away (the high watermark may pass its end
/// offset again later, over other batches).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Committed {
    pub hw: i64,
    /// How many truncations the partition went through.
    pub truncations: u64,
    /// The log end the latest truncation left.
    pub truncated_to: i64,
}

/// A wait for a partition's high watermark to reach an offset: it moves
/// with durability (or at once under a relaxed flush policy), and on a
/// replicated partition no further than its bound allows
/// ([`Partition::set_high_watermark_bound`]: what the in-sync followers hold).
#[derive(Debug)]
pub struct CommitWait {
    hw: tokio::sync::watch::Receiver<Committed>,
    durable: tokio::sync::watch::Receiver<log::Durable>,
    end_offset: i64,
    /// The truncations the partition had been through when the batch went in.
    truncations: u64,
}

impl CommitWait {
    fn new(
        hw: tokio::sync::watch::Receiver<Committed>,
        durable: tokio::sync::watch::Receiver<log::Durable>,
        end_offset: i64,
    ) -> Self {
        let truncations = hw.borrow().truncations;
        Self {
            hw,
            durable,
            end_offset,
            truncations,
        }
    }

    /// Wait until the high watermark is at or past the end offset, or fail
    /// if the log was poisoned (or closed) first, or if a truncation cut
    /// the batch away ([`StorageError::Truncated`]).
    pub async fn wait(mut self) -> Result<(), StorageError> {
        use std::future::Future;
        use std::task::Poll;
        loop {
            let now = *self.hw.borrow_and_update();
            if now.truncations != self.truncations {
                // Truncations the watch folded together may have cut lower
                // than the latest one says: only one at a time is judged.
                if now.truncations - self.truncations > 1 || now.truncated_to < self.end_offset {
                    return Err(StorageError::Truncated {
                        end_offset: self.end_offset,
                        truncated_to: now.truncated_to,
                    });
                }
                self.truncations = now.truncations;
            }
            if now.hw >= self.end_offset {
                return Ok(());
            }
            if let Some(reason) = &self.durable.borrow_and_update().poisoned {
                return Err(StorageError::Poisoned {
                    reason: reason.clone(),
                });
            }
            let mut hw = std::pin::pin!(self.hw.changed());
            let mut durable = std::pin::pin!(self.durable.changed());
            let changed = std::future::poll_fn(|cx| match hw.as_mut().poll(cx) {
                Poll::Ready(r) => Poll::Ready(r),
                Poll::Pending => durable.as_mut().poll(cx),
            })
            .await;
            if changed.is_err() {
                return Err(StorageError::Poisoned {
                    reason: Arc::from("the commit log was closed before the batch was committed"),
                });
            }
        }
    }
}

/// A wait for the commit log to make a position durable.
#[derive(Debug, Clone)]
pub struct DurableWait {
    state: WaitState,
}

#[derive(Debug, Clone)]
enum WaitState {
    Ready,
    Pending {
        rx: tokio::sync::watch::Receiver<log::Durable>,
        position: u64,
    },
}

impl DurableWait {
    fn ready() -> Self {
        Self {
            state: WaitState::Ready,
        }
    }

    fn pending(rx: tokio::sync::watch::Receiver<log::Durable>, position: u64) -> Self {
        Self {
            state: WaitState::Pending { rx, position },
        }
    }

    /// True when nothing is left to wait for (the append's policy needs no fsync,
    /// or the fsync already happened).
    pub fn is_ready(&self) -> bool {
        match &self.state {
            WaitState::Ready => true,
            WaitState::Pending { rx, position } => rx.borrow().position >= *position,
        }
    }

    /// Wait until the append is durable, or fail if the log was poisoned by an
    /// fsync or write error.
    pub async fn wait(self) -> Result<(), StorageError> {
        let WaitState::Pending { mut rx, position } = self.state else {
            return Ok(());
        };
        let outcome = match rx
            .wait_for(|d| d.position >= position || d.poisoned.is_some())
            .await
        {
            Ok(d) if d.position >= position => Ok(()),
            Ok(d) => Err(d
                .poisoned
                .clone()
                .unwrap_or_else(|| Arc::from("unknown failure"))),
            Err(_) => Err(Arc::from(
                "the commit log was closed before the append was durable",
            )),
        };
        outcome.map_err(|reason| StorageError::Poisoned { reason })
    }
}

/// Batches read from a partition, plus its offsets at read time.
#[derive(Debug, Clone)]
pub struct ReadOutcome {
    /// Whole record batches, concatenated, exactly as stored.
    pub records: Bytes,
    /// The partition's offsets when the read happened.
    pub offsets: PartitionOffsets,
    /// For a read_committed read ([`Partition::read_committed`]): the
    /// aborted transactions whose records the batches read may hold, in
    /// marker order; a consumer drops each producer's records from the
    /// transaction's first offset on. Empty otherwise.
    pub aborted: Vec<AbortedTxn>,
}

/// What [`Partition::delay_batches`] found: the batches, each with its base
/// offset, and where the walk goes on.
#[derive(Debug, Clone, Default)]
pub struct DelayBatches {
    /// `(base offset, stored batch)`, in offset order.
    pub batches: Vec<(i64, Bytes)>,
    /// The offset to walk on from: the end asked for once it is reached.
    pub next: i64,
}

/// What [`Partition::delay_batches_into`] appended to the caller's buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DelaySpans {
    /// `(base offset, where the stored batch lies in the buffer)`, in
    /// offset order.
    pub spans: Vec<(i64, std::ops::Range<usize>)>,
    /// The offset to walk on from: the end asked for once it is reached.
    pub next: i64,
}

/// The offset a read stops before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReadBound {
    /// Consumers read committed batches only.
    HighWatermark,
    /// read_committed consumers read below the last stable offset.
    LastStable,
    /// A follower replica reads everything the leader wrote.
    LogEnd,
}

/// The broker's commit log. Cheap to clone; all clones share one log.
#[derive(Clone)]
pub struct CommitLog {
    inner: Arc<Store>,
}

impl std::fmt::Debug for CommitLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommitLog").finish_non_exhaustive()
    }
}

impl CommitLog {
    /// Open (or create) the log under `dir`, recovering from a crash if needed.
    pub fn open(
        dir: &Path,
        config: LogConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<(CommitLog, RecoveryReport), StorageError> {
        Self::open_with_io(dir, config, clock, Arc::new(io::OsIo))
    }

    fn open_with_io(
        dir: &Path,
        config: LogConfig,
        clock: Arc<dyn Clock>,
        io: Arc<dyn io::FileIo>,
    ) -> Result<(CommitLog, RecoveryReport), StorageError> {
        let (inner, report) = recovery::open(dir, config, clock, io)?;
        Ok((CommitLog { inner }, report))
    }

    fn handle(&self, inner: Arc<PartitionInner>) -> Partition {
        Partition {
            inner,
            log: self.inner.clone(),
        }
    }

    /// Register a partition (idempotent: an existing one is returned with the
    /// new config). One partition of [`CommitLog::create_partitions`].
    pub fn create_partition(
        &self,
        id: PartitionId,
        config: PartitionConfig,
    ) -> Result<Partition, StorageError> {
        let mut created = self.create_partitions(&[id], config)?;
        let handle = created.pop();
        debug_assert!(created.is_empty(), "one id, one handle");
        handle.ok_or_else(|| {
            log::io_err(
                "creating a partition",
                std::io::Error::other("no handle came back"),
            )
        })
    }

    /// Register partitions, all or nothing, each with `config`; handles come
    /// back in the order of `ids`. An id already registered is returned with
    /// the new config; an id named twice is created once.
    ///
    /// Each new partition's index file is created and its header written,
    /// then the index folder is fsync'd once for all of them: creating n
    /// partitions costs one fsync, not 2n. The headers themselves are not
    /// fdatasync'd: recovery accepts an index file that no checkpoint names
    /// yet even when its header is torn or missing (the file name carries the
    /// partition's identity), so only the folder entry has to be durable
    /// before the partition's first batch can be. If any step fails, the
    /// files this call created are removed and nothing is registered.
    pub fn create_partitions(
        &self,
        ids: &[PartitionId],
        config: PartitionConfig,
    ) -> Result<Vec<Partition>, StorageError> {
        let _panic = self.inner.panic_guard("creating partitions");
        let mut registry = write(&self.inner.registry)?;
        let mut fresh: Vec<PartitionId> = ids
            .iter()
            .filter(|id| !registry.contains_key(id))
            .copied()
            .collect();
        fresh.sort_unstable();
        fresh.dedup();
        let mut paths = Vec::with_capacity(fresh.len());
        let written = fresh.iter().try_for_each(|&id| {
            let path = recovery::index_path(&self.inner.index_dir, id);
            let file = self
                .inner
                .log
                .io
                .open(
                    &path,
                    std::fs::OpenOptions::new()
                        .read(true)
                        .write(true)
                        .create(true)
                        .truncate(true),
                )
                .map_err(|e| log::io_err(format!("creating {}", path.display()), e))?;
            paths.push(path);
            // Closed here; the index-file set reopens it when first written.
            self.inner
                .log
                .io
                .write_all_at(&file, &format::index_header(id), 0)
                .map_err(|e| log::io_err(format!("writing the header of {}", path_of(&paths)), e))
        });
        let synced = written.and_then(|()| {
            if fresh.is_empty() {
                return Ok(());
            }
            io::durable::sync_dir(
                self.inner.log.io.as_ref(),
                "storage::partition_create_dir_sync",
                &self.inner.index_dir,
            )
            .map_err(|e| log::io_err(format!("fsync of {}", self.inner.index_dir.display()), e))
        });
        if let Err(err) = synced {
            remove_created(self.inner.log.io.as_ref(), &paths);
            return Err(err);
        }
        debug_assert_eq!(paths.len(), fresh.len(), "one index file per new partition");
        for &id in &fresh {
            let inner = Arc::new(PartitionInner::new(
                id,
                partition::PartitionState::new(id, &self.inner.log.dir, config.clone()),
            ));
            registry.insert(id, inner);
        }
        self.inner.share_index_memory(registry.len());
        let handles: Vec<Partition> = ids
            .iter()
            .filter_map(|id| registry.get(id).map(|p| self.handle(p.clone())))
            .collect();
        drop(registry);
        assert_eq!(handles.len(), ids.len(), "every id is registered");
        let fresh_ids: std::collections::HashSet<PartitionId> = fresh.into_iter().collect();
        for handle in &handles {
            if !fresh_ids.contains(&handle.id()) {
                handle.set_config(config.clone());
            }
        }
        if !fresh_ids.is_empty() {
            self.inner.mark_checkpoint_dirty();
        }
        Ok(handles)
    }

    /// Append one payload to each of several partitions, as
    /// [`Partition::append`] does for one, but with a single write to the log
    /// for all of them: a produce request that touches many partitions then
    /// costs one system call, not one per partition. Results come back in the
    /// order of `items`; a partition named twice is appended to in turn.
    pub fn append_many(
        &self,
        items: &[(Partition, Bytes)],
    ) -> Vec<Result<AppendOutcome, AppendError>> {
        let ours = |p: &Partition| Arc::ptr_eq(&p.log, &self.inner);
        if !items.iter().all(|(p, _)| ours(p)) {
            // Handles of another log are appended through their own log.
            return items.iter().map(|(p, b)| p.append(b.clone())).collect();
        }
        let inner: Vec<(Arc<PartitionInner>, Bytes, Option<&Summaries>)> = items
            .iter()
            .map(|(p, b)| (p.inner.clone(), b.clone(), None))
            .collect();
        partition::append_many(&self.inner, &inner)
    }

    /// [`Self::append_many`] of produced payloads already read by
    /// [`check_produced`], whose summaries the appends take instead of
    /// reading each batch's records again.
    pub fn append_many_checked(
        &self,
        items: &[(Partition, Bytes, Summaries)],
    ) -> Vec<Result<AppendOutcome, AppendError>> {
        let ours = |p: &Partition| Arc::ptr_eq(&p.log, &self.inner);
        if !items.iter().all(|(p, _, _)| ours(p)) {
            return items.iter().map(|(p, b, _)| p.append(b.clone())).collect();
        }
        let inner: Vec<(Arc<PartitionInner>, Bytes, Option<&Summaries>)> = items
            .iter()
            .map(|(p, b, s)| (p.inner.clone(), b.clone(), Some(s)))
            .collect();
        partition::append_many(&self.inner, &inner)
    }

    /// Advance the log-start offset of each partition to its offset
    /// (DeleteRecords; `-1` means the high watermark), as
    /// [`Partition::delete_records_before`] does for one, but with one sync
    /// and one checkpoint for all of them: a request naming many partitions
    /// costs one fsync round, not one per partition. Results (each the new
    /// log-start offset, durable on return) come back in the order of `items`.
    pub fn delete_records_before_many(
        &self,
        items: &[(Partition, i64)],
    ) -> Vec<Result<i64, ReadError>> {
        if !items.iter().all(|(p, _)| Arc::ptr_eq(&p.log, &self.inner)) {
            // Handles of another log are moved through their own log.
            return items
                .iter()
                .map(|(p, offset)| p.delete_records_before(*offset))
                .collect();
        }
        let inner: Vec<(&Arc<PartitionInner>, i64)> = items
            .iter()
            .map(|(p, offset)| (&p.inner, *offset))
            .collect();
        log_start::delete_records_before(&self.inner, &inner)
    }

    /// The folder the log was opened in (the broker's data dir), as given
    /// to [`CommitLog::open`].
    pub fn dir(&self) -> &Path {
        &self.inner.log.dir
    }

    /// A partition registered earlier (before or after a restart).
    pub fn partition(&self, id: PartitionId) -> Option<Partition> {
        self.inner
            .read_frozen(&self.inner.registry)
            .get(&id)
            .map(|p| self.handle(p.clone()))
    }

    /// Every registered partition.
    pub fn partitions(&self) -> Vec<PartitionId> {
        let registry = self.inner.read_frozen(&self.inner.registry);
        let mut ids: Vec<PartitionId> = registry.keys().copied().collect();
        drop(registry);
        ids.sort();
        ids
    }

    /// Forget a partition and its index; its log space is reclaimed later.
    pub fn remove_partition(&self, id: PartitionId) -> Result<(), StorageError> {
        let _panic = self.inner.panic_guard("removing a partition");
        let Some(p) = ({
            let mut registry = write(&self.inner.registry)?;
            let p = registry.remove(&id);
            self.inner.share_index_memory(registry.len());
            p
        }) else {
            return Ok(());
        };
        let path = {
            let mut st = lock(&p.state)?;
            st.mark_removed();
            // Its snapshots' removal is durable at once; its aborted
            // transactions, like its index file, with the folder fsyncs
            // below and at the next checkpoint. Recovery removes what is
            // left of a partition it does not know.
            st.remove_files(self.inner.index_io())?;
            st.index().path().to_path_buf()
        };
        // Its unsynced writes no longer matter: the file is deleted.
        self.inner.index_files.forget(&path)?;
        match self.inner.log.io.remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(log::io_err(format!("removing {}", path.display()), e)),
        }
        io::durable::sync_dir(
            self.inner.log.io.as_ref(),
            "storage::partition_remove_dir_sync",
            &self.inner.index_dir,
        )
        .map_err(|e| log::io_err(format!("fsync of {}", self.inner.index_dir.display()), e))?;
        self.inner.mark_checkpoint_dirty();
        // Its epochs leave the leader-epoch file at the next write.
        self.inner.leader_epochs.mark_dirty();
        self.inner.bump_progress();
        Ok(())
    }

    /// A counter that changes whenever any partition's high watermark or
    /// log-start offset moves. Long-polling fetches wait on it.
    pub fn progress(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.progress_tx.subscribe()
    }

    /// Apply retention, compact partitions with `compact` set (newest value
    /// per key below the cleanable point; see `docs/format.md`), delete
    /// segments with no live data, and relocate the few live batches that
    /// pin old segments. The broker calls it periodically.
    pub fn run_maintenance(&self) -> Result<(), StorageError> {
        let _panic = self.inner.panic_guard("maintenance");
        maintenance::run(&self.inner)
    }

    /// [`Partition::set_leader_epoch`] for several partitions, with one write
    /// of the leader-epoch file for all of them (a leader change moves many
    /// partitions at once). Results come back in the order of `items`; each
    /// is refused or applied on its own, and all that changed are durable on
    /// return.
    pub fn set_leader_epochs(&self, items: &[(Partition, i32)]) -> Vec<Result<(), EpochError>> {
        let _panic = self.inner.panic_guard("setting leader epochs");
        let parts: Vec<(&PartitionInner, i32)> = items
            .iter()
            .map(|(p, epoch)| (p.inner.as_ref(), *epoch))
            .collect();
        epochs::set_leader_epochs(&self.inner, &parts)
    }

    /// Make everything durable, write a checkpoint, and stop background threads.
    pub fn shutdown(&self) -> Result<(), StorageError> {
        self.inner.shutdown()
    }
}

/// One partition's view of the commit log. Cheap to clone.
#[derive(Clone)]
pub struct Partition {
    inner: Arc<PartitionInner>,
    log: Arc<Store>,
}

impl std::fmt::Debug for Partition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Partition").finish_non_exhaustive()
    }
}

impl Partition {
    /// The partition's identity.
    pub fn id(&self) -> PartitionId {
        self.inner.id
    }

    /// Validate and append one produce payload (one or more RecordBatch v2),
    /// assigning offsets. Idempotent producers are checked per producer id,
    /// epoch and sequence against the last five batches.
    pub fn append(&self, batches: Bytes) -> Result<AppendOutcome, AppendError> {
        partition::append(&self.log, &self.inner, batches)
    }

    /// Append batches a leader already stored, with their offsets (a
    /// follower's append): each must start at or after the log end
    /// (compaction may leave gaps); nothing in them is changed and no
    /// producer check runs, but producer state is kept for a later failover.
    pub fn append_replica(&self, batches: Bytes) -> Result<AppendOutcome, AppendError> {
        partition::append_replica(&self.log, &self.inner, batches)
    }

    /// Append a transaction marker (Kafka's WriteTxnMarkers, on the
    /// partition's leader): a control batch that ends `producer_id`'s open
    /// transaction here, committed or aborted. Records of an aborted one
    /// are named to read_committed readers ([`ReadOutcome::aborted`]) from
    /// then on. A marker of an older producer epoch is refused
    /// ([`AppendError::InvalidProducerEpoch`]), and one from an older
    /// coordinator than the producer's last marker
    /// ([`AppendError::CoordinatorFenced`]). A producer with no transaction
    /// open here still gets its marker (a coordinator retrying, or an
    /// operator aborting a hanging transaction).
    pub fn append_marker(
        &self,
        producer_id: i64,
        producer_epoch: i16,
        marker: TxnMarker,
    ) -> Result<AppendOutcome, AppendError> {
        partition::append_marker(&self.log, &self.inner, producer_id, producer_epoch, marker)
    }

    /// Where `producer_id`'s open transaction began in this partition, if
    /// one is open.
    pub fn open_transaction(&self, producer_id: i64) -> Option<i64> {
        self.log
            .lock_frozen(&self.inner.state)
            .producers()
            .get(producer_id)
            .and_then(|s| s.txn_first_offset())
    }

    /// Whether `producer_id` has a transaction open here at `epoch`: a
    /// batch of a newer epoch belongs to a later transaction, even while
    /// the marker of this one is on its way.
    pub fn in_open_transaction(&self, producer_id: i64, epoch: i16) -> bool {
        self.log
            .lock_frozen(&self.inner.state)
            .producers()
            .get(producer_id)
            .is_some_and(|s| s.txn_first_offset().is_some() && s.epoch() == epoch)
    }

    /// Every producer this partition remembers, by producer id
    /// (DescribeProducers).
    pub fn producers(&self) -> Vec<ProducerSummary> {
        self.log
            .lock_frozen(&self.inner.state)
            .producers()
            .summaries()
    }

    /// Remove every batch from the one holding `offset` on: the log end
    /// (and the durable end and high watermark, if past it) comes back to
    /// that batch's base offset, `offset` itself when it is a batch
    /// boundary. Durable on return: a truncation entry in the log, applied
    /// again by recovery, keeps any removed batch from coming back after a
    /// crash. An offset at or past the log end changes nothing. Returns the
    /// new log end.
    pub fn truncate_to(&self, offset: i64) -> Result<i64, TruncateError> {
        partition::truncate_to(&self.log, &self.inner, offset)
    }

    /// Remove every batch and start the log at `offset`, at or past the log
    /// end (Kafka's `truncateFullyAndStartAt`, for a follower whose
    /// leader's log start passed its log end): the log start, log end,
    /// durable end and high watermark all become `offset`. Producer state
    /// is forgotten (an unknown producer is then accepted at any sequence)
    /// and the leader-epoch cache keeps only the epoch covering `offset`.
    /// Durable on return, and crash-safe: a crash leaves either the old log
    /// whole or the new start with no old batch. An offset below the log
    /// end is refused ([`TruncateError::BelowLogEnd`]). Returns the new log
    /// start.
    pub fn truncate_fully_and_start_at(&self, offset: i64) -> Result<i64, TruncateError> {
        log_start::truncate_fully_and_start_at(&self.log, &self.inner, offset)
    }

    /// Read whole batches starting with the one that holds `offset`, up to
    /// `max_bytes` (always at least one batch when any is available), never
    /// past the high watermark.
    pub fn read(&self, offset: i64, max_bytes: usize) -> Result<ReadOutcome, ReadError> {
        partition::read_from(
            &self.log,
            &self.inner,
            offset,
            max_bytes,
            ReadBound::HighWatermark,
        )
    }

    /// [`Self::read`] for a read_committed consumer: never past the last
    /// stable offset, and naming the aborted transactions among the
    /// batches read ([`ReadOutcome::aborted`]).
    pub fn read_committed(&self, offset: i64, max_bytes: usize) -> Result<ReadOutcome, ReadError> {
        partition::read_from(
            &self.log,
            &self.inner,
            offset,
            max_bytes,
            ReadBound::LastStable,
        )
    }

    /// [`Self::read`] through a view's tag `filter`: records the filter
    /// does not match are left out (a batch is sent as stored, rebuilt from
    /// its matching records, or skipped; batches whose tag summaries rule
    /// the filter out are not read), at their offsets, and a read that ends
    /// on skipped batches ends with an empty control batch spanning them, so the
    /// reader moves past them. Up to the last stable offset when
    /// `committed` (naming the aborted transactions), else the high
    /// watermark. `max_bytes` bounds the source bytes read.
    pub fn read_filtered(
        &self,
        offset: i64,
        max_bytes: usize,
        committed: bool,
        filter: &TagExpr,
    ) -> Result<ReadOutcome, ReadError> {
        let bound = if committed {
            ReadBound::LastStable
        } else {
            ReadBound::HighWatermark
        };
        filtered::read_filtered(
            &self.log,
            &self.inner,
            (offset, max_bytes),
            bound,
            Some(filter),
        )
    }

    /// The stored batches holding delayed-delivery records (pending
    /// originals or delivered copies) among offsets `from..to`, walked in
    /// bounded steps: see [`DelayBatches`].
    pub fn delay_batches(
        &self,
        from: i64,
        to: i64,
        max_bytes: usize,
    ) -> Result<DelayBatches, ReadError> {
        filtered::delay_batches(&self.log, &self.inner, (from, to), max_bytes)
    }

    /// [`Self::delay_batches`], appending the batches to `out` rather than
    /// to a fresh buffer. The delay mover reads a batch
    /// for every due record and keeps one buffer for them all. On an error
    /// `out` holds what it held before.
    pub fn delay_batches_into(
        &self,
        (from, to): (i64, i64),
        max_bytes: usize,
        out: &mut Vec<u8>,
    ) -> Result<DelaySpans, ReadError> {
        filtered::delay_batches_into(&self.log, &self.inner, (from, to), max_bytes, out)
    }

    /// Base offset of the last batch with delayed-delivery records appended
    /// since the process started, or -1: a cheap "anything new?" for the
    /// delay mover, which walks the log itself after a restart.
    pub fn last_delay_mark(&self) -> i64 {
        self.log.lock_frozen(&self.inner.state).last_delay_mark()
    }

    /// [`Self::read`] for a follower replica: bounded by the log end, not
    /// the high watermark, since a follower copies what the leader wrote
    /// before it is committed (its copy is what lets it commit).
    pub fn read_replica(&self, offset: i64, max_bytes: usize) -> Result<ReadOutcome, ReadError> {
        partition::read_from(&self.log, &self.inner, offset, max_bytes, ReadBound::LogEnd)
    }

    /// Bound the high watermark for replication: it follows durability but
    /// never passes `bound` (a leader sets the lowest durable end its
    /// in-sync followers confirmed, a follower the leader's high
    /// watermark). `None` lifts the bound: a single node's partition,
    /// whose high watermark is its durable end. The high watermark never
    /// moves back here (only a truncation lowers it); when it moves up,
    /// [`CommitLog::progress`] and pending `acks=all` waits wake. Returns
    /// the high watermark after the change.
    pub fn set_high_watermark_bound(&self, bound: Option<i64>) -> i64 {
        let mut st = self.log.lock_frozen(&self.inner.state);
        let moved = st.set_hw_bound(bound);
        let hw = st.hw();
        drop(st);
        if moved {
            self.log.bump_progress();
        }
        hw
    }

    /// Bytes of the partition's batches from its log start to its log end,
    /// as stored in the commit log (durable or not): the total its index
    /// keeps for `retention.bytes`, so reading it costs no I/O. Kafka's
    /// log size, without the other partitions' batches that share the
    /// commit log's segments.
    pub fn size_bytes(&self) -> u64 {
        self.log.lock_frozen(&self.inner.state).index().live_bytes()
    }

    /// Current offsets.
    pub fn offsets(&self) -> PartitionOffsets {
        self.log.lock_frozen(&self.inner.state).offsets()
    }

    /// The first offset whose record timestamp is at or after `timestamp`,
    /// with that record's timestamp; `None` when every record is older.
    pub fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<(i64, i64)>, ReadError> {
        partition::offset_for_timestamp(&self.log, &self.inner, timestamp)
    }

    /// The offset and timestamp of the record with the largest timestamp.
    pub fn max_timestamp(&self) -> Result<Option<(i64, i64)>, ReadError> {
        partition::max_timestamp(&self.log, &self.inner)
    }

    /// Advance the log-start offset to `offset` (DeleteRecords); durable on return.
    /// `-1` means the high watermark. Returns the new log-start offset.
    /// One partition's [`CommitLog::delete_records_before_many`].
    pub fn delete_records_before(&self, offset: i64) -> Result<i64, ReadError> {
        let mut results = log_start::delete_records_before(&self.log, &[(&self.inner, offset)]);
        results
            .pop()
            .unwrap_or_else(|| Err(ReadError::Storage(partition::removed_error(self.inner.id))))
    }

    /// Replace the partition's config (an altered topic config).
    pub fn set_config(&self, config: PartitionConfig) {
        let moved = self.log.lock_frozen(&self.inner.state).set_config(config);
        if moved {
            self.log.bump_progress();
        }
    }

    /// The partition's config.
    pub fn config(&self) -> PartitionConfig {
        self.log.lock_frozen(&self.inner.state).config().clone()
    }

    /// Set `delete.retention.ms`: how long compaction keeps a tombstone
    /// (counted from the tombstone's timestamp). `None` keeps tombstones
    /// forever; the default is Kafka's, 24 hours.
    pub fn set_delete_retention_ms(&self, ms: Option<i64>) {
        self.log
            .lock_frozen(&self.inner.state)
            .set_delete_retention_ms(ms);
    }

    /// The partition's `delete.retention.ms`.
    pub fn delete_retention_ms(&self) -> Option<i64> {
        self.log
            .lock_frozen(&self.inner.state)
            .delete_retention_ms()
    }

    /// Make `epoch` the partition's leader epoch: it is stamped into every
    /// batch appended after (`partitionLeaderEpoch`), starts at the current
    /// log end in the leader-epoch cache, and is durable on return (the
    /// leader-epoch file is rewritten). The current epoch again changes
    /// nothing; an older or negative one is refused. A failed write poisons
    /// the log.
    pub fn set_leader_epoch(&self, epoch: i32) -> Result<(), EpochError> {
        let _panic = self.log.panic_guard("setting a leader epoch");
        epochs::set_leader_epoch(&self.log, &self.inner, epoch)
    }

    /// The partition's leader epoch (0 until one is set).
    pub fn leader_epoch(&self) -> i32 {
        self.inner.leader_epoch()
    }

    /// Where leader epoch `epoch` ends, for OffsetForLeaderEpoch: the largest
    /// known epoch at or below it and the start offset of the next larger
    /// epoch, or the log end for the latest epoch (Kafka's leader-epoch cache
    /// semantics). `None` when the cache cannot place it: -1, an epoch above
    /// every known one, or a partition with no epoch yet.
    pub fn end_offset_for_epoch(&self, epoch: i32) -> Option<(i32, i64)> {
        let st = self.log.lock_frozen(&self.inner.state);
        let (found, end) = st.epochs().end_offset_for(epoch, st.log_end());
        (end != UNDEFINED_EPOCH_OFFSET).then_some((found, end))
    }

    /// The leader epoch `offset` was written in; `None` when no known epoch
    /// starts at or before it (ListOffsets answers -1 then).
    pub fn epoch_for_offset(&self, offset: i64) -> Option<i32> {
        self.log
            .lock_frozen(&self.inner.state)
            .epochs()
            .epoch_for_offset(offset)
    }
}

/// The last path of `paths`, for an error message.
fn path_of(paths: &[std::path::PathBuf]) -> String {
    paths
        .last()
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

/// Undo the index files of a [`CommitLog::create_partitions`] that failed.
/// Nothing refers to them yet; one that cannot be removed is logged, and
/// recovery finds an index file with no batches, which costs nothing.
fn remove_created(io: &dyn io::FileIo, paths: &[std::path::PathBuf]) {
    for path in paths {
        if let Err(e) = io.remove_file(path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(file = %path.display(), error = %e, "cannot remove the index file of a partition whose creation failed");
        }
    }
}

#[cfg(test)]
mod create_partitions_tests {
    use super::*;

    fn open(dir: &Path) -> CommitLog {
        CommitLog::open(dir, LogConfig::default(), Arc::new(SystemClock))
            .unwrap()
            .0
    }

    fn ids(topic: u128, range: std::ops::Range<i32>) -> Vec<PartitionId> {
        range
            .map(|partition| PartitionId {
                topic_id: Uuid::from_u128(topic),
                partition,
            })
            .collect()
    }

    fn index_files(dir: &Path) -> usize {
        std::fs::read_dir(dir.join("index"))
            .unwrap()
            .filter(|e| {
                let e = e.as_ref().unwrap();
                e.file_type().unwrap().is_file() && e.path().extension() == Some("idx".as_ref())
            })
            .count()
    }

    #[test]
    fn created_partitions_are_found_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path());
        let wanted = ids(1, 0..50);
        let handles = log
            .create_partitions(&wanted, PartitionConfig::default())
            .unwrap();
        let got: Vec<PartitionId> = handles.iter().map(Partition::id).collect();
        assert_eq!(got, wanted);
        handles[7].append(one_batch()).unwrap();
        log.shutdown().unwrap();
        drop((log, handles));

        let log = open(dir.path());
        assert_eq!(log.partitions(), wanted);
        let seven = log.partition(wanted[7]).unwrap();
        assert_eq!(seven.offsets().log_end, 1);
        log.shutdown().unwrap();
    }

    #[test]
    fn existing_and_repeated_ids_come_back_once_registered_with_the_new_config() {
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path());
        let first = log.create_partition(ids(2, 0..1)[0], PartitionConfig::default());
        first.unwrap().append(one_batch()).unwrap();
        let relaxed = PartitionConfig {
            flush_messages: 10,
            ..PartitionConfig::default()
        };
        let mut asked = ids(2, 0..3);
        asked.push(asked[1]);
        let handles = log.create_partitions(&asked, relaxed.clone()).unwrap();
        assert_eq!(handles.len(), 4);
        assert_eq!(log.partitions(), ids(2, 0..3));
        assert_eq!(
            handles[0].offsets().log_end,
            1,
            "the existing one kept its data"
        );
        assert!(handles.iter().all(|h| h.config() == relaxed));
        assert_eq!(index_files(dir.path()), 3);
        log.shutdown().unwrap();
    }

    #[test]
    fn a_failed_creation_registers_nothing_and_removes_its_files() {
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path());
        let wanted = ids(3, 0..6);
        // Partition 4's index file cannot be created: a folder is in its way.
        let blocker = recovery::index_path(&dir.path().join("index"), wanted[4]);
        std::fs::create_dir_all(&blocker).unwrap();
        let err = log
            .create_partitions(&wanted, PartitionConfig::default())
            .unwrap_err();
        assert!(err.to_string().contains("creating"), "{err}");
        assert!(log.partitions().is_empty());
        assert_eq!(index_files(dir.path()), 0, "partitions 0 to 3 were removed");
        std::fs::remove_dir(&blocker).unwrap();
        assert_eq!(
            log.create_partitions(&wanted, PartitionConfig::default())
                .unwrap()
                .len(),
            6
        );
        log.shutdown().unwrap();
    }

    fn one_batch() -> Bytes {
        crate::batch::test_batches::batch(1, 10)
    }
}
