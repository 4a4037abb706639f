//! The partition layer's shared half: the registry of partitions on top of
//! the commit log (`log.rs`), their index files and the index memory budget
//! shared out over them, the leader-epoch file, the recovery checkpoint and
//! the thread that writes it, and the high watermarks that move when the
//! log reports durable progress.
//!
//! Layers, bottom up: `log.rs` stores entries and returns positions, and
//! knows nothing of partitions; `partition.rs` (with `index.rs`,
//! `producer.rs` and `epochs.rs`'s cache) owns one partition's queue index
//! and offsets behind methods; this module ties the partitions to the log.
//! Maintenance, recovery and reclaiming run at this level.
//!
//! Lock order (a thread holding one may take only those after it):
//! `maintenance_lock`, `checkpoint_lock`, the log's `flush_lock`, the
//! leader-epoch file's `write_lock`, `registry`, a partition's `state`
//! (several only in partition-id order), the log's `writer`, the log's
//! `segments`, the index-file set (`IndexFiles`). The checkpoint thread's
//! wake-up lock and `threads` are taken alone.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock, RwLockReadGuard, Weak};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::PartitionId;
use crate::error::StorageError;
use crate::format::{self, Checkpoint, CheckpointPartition};
use crate::index::HOT_ENTRIES_MIN;
use crate::io::{IndexFiles, IndexIo};
use crate::log::{FLUSHER_IDLE_WAIT_MS, FlushListener, LogInner, PanicGuard, lock, read};
use crate::partition::PartitionInner;

/// Name of the recovery checkpoint under the data directory.
pub(crate) const CHECKPOINT_FILE: &str = "checkpoint";
/// Temporary name the checkpoint is written under before its rename.
pub(crate) const CHECKPOINT_TMP_FILE: &str = "checkpoint.tmp";

/// The hot-tail length that keeps `partitions` partitions' index entries
/// within `budget_bytes` (never below [`HOT_ENTRIES_MIN`]).
fn hot_entries_max(budget_bytes: u64, partitions: usize) -> usize {
    let per_entry = std::mem::size_of::<format::IndexEntry>() as u64;
    let share = budget_bytes / (partitions.max(1) as u64 * per_entry);
    usize::try_from(share)
        .unwrap_or(usize::MAX)
        .max(HOT_ENTRIES_MIN)
}

/// The partitions and what they share, over one commit log.
pub(crate) struct Store {
    pub log: Arc<LogInner>,
    pub index_dir: PathBuf,
    pub registry: RwLock<HashMap<PartitionId, Arc<PartitionInner>>>,
    /// The partitions' index files, a bounded set held open.
    pub index_files: IndexFiles,
    /// The most index entries each partition keeps in memory: the index
    /// memory budget shared out over the partitions (see [`Self::share_index_memory`]).
    index_hot_entries_max: AtomicUsize,
    /// The leader-epoch file (`epochs.rs`).
    pub leader_epochs: crate::epochs::LeaderEpochsFile,
    /// Serializes checkpoint writes.
    checkpoint_lock: Mutex<()>,
    /// Serializes maintenance runs: retention, compaction and the cleaner
    /// each assume no other run moves index entries under them.
    pub maintenance_lock: Mutex<()>,
    /// Something a checkpoint records changed since the last one.
    pub checkpoint_dirty: AtomicBool,
    /// An aborted-transaction file was made or removed since the last
    /// checkpoint: its folder is fsync'd before the next checkpoint
    /// vouches for what the file holds.
    pub txn_dir_dirty: AtomicBool,
    /// When the store was opened; `last_checkpoint_ms` counts from it.
    opened: Instant,
    /// When the last checkpoint was written, in ms since `opened`. An atomic,
    /// not a lock: the checkpoint thread reads it while a checkpoint takes
    /// partition locks, so a lock here would be one more order to keep.
    last_checkpoint_ms: AtomicU64,
    /// Wakes the checkpoint thread (shutdown). Not waited on with a lock of
    /// the store, so that thread holds no reference to it while it waits
    /// (see [`checkpoint_main`]).
    checkpoint_wake: Arc<(Mutex<()>, Condvar)>,
    /// Counts moves of any high watermark or log start; long polls wait on it.
    pub progress_tx: watch::Sender<u64>,
    /// The checkpoint thread, joined on shutdown.
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

impl Store {
    pub fn new(
        log: Arc<LogInner>,
        partitions: HashMap<PartitionId, Arc<PartitionInner>>,
        index_files: IndexFiles,
    ) -> Self {
        let hot_max = hot_entries_max(log.config.index_memory_bytes, partitions.len());
        let (progress_tx, _) = watch::channel(0u64);
        Self {
            index_dir: log.dir.join("index"),
            leader_epochs: crate::epochs::LeaderEpochsFile::new(&log.dir),
            log,
            registry: RwLock::new(partitions),
            index_files,
            index_hot_entries_max: AtomicUsize::new(hot_max),
            checkpoint_lock: Mutex::new(()),
            maintenance_lock: Mutex::new(()),
            checkpoint_dirty: AtomicBool::new(true),
            txn_dir_dirty: AtomicBool::new(false),
            opened: Instant::now(),
            last_checkpoint_ms: AtomicU64::new(0),
            checkpoint_wake: Arc::new((Mutex::new(()), Condvar::new())),
            progress_tx,
            threads: Mutex::new(Vec::new()),
        }
    }

    /// Start the background threads: the log's flusher (group commit),
    /// which reports to this store, and the checkpoint thread, apart so
    /// that index fsyncs never delay an fdatasync that producers wait for.
    pub fn start(self: &Arc<Self>) -> Result<(), StorageError> {
        let weak: Weak<Store> = Arc::downgrade(self);
        self.log.start_flusher(weak)?;
        let checkpoint =
            crate::log::spawn_guarded(self, "weir-checkpoint", checkpoint_main, |s| &s.log)?;
        lock(&self.threads)?.push(checkpoint);
        Ok(())
    }

    /// How a partition reaches its index file.
    pub fn index_io(&self) -> IndexIo<'_> {
        IndexIo {
            files: &self.index_files,
            io: self.log.io.as_ref(),
        }
    }

    /// The most index entries one partition keeps in memory.
    pub fn index_hot_entries_max(&self) -> usize {
        self.index_hot_entries_max.load(Ordering::Relaxed)
    }

    /// Share the index memory budget out over `partitions` partitions (a
    /// partition was created or removed). Partitions over their new share
    /// shrink at their next append.
    pub fn share_index_memory(&self, partitions: usize) {
        self.index_hot_entries_max.store(
            hot_entries_max(self.log.config.index_memory_bytes, partitions),
            Ordering::Relaxed,
        );
    }

    /// Tell waiters that a partition moved (high watermark or log start).
    pub fn bump_progress(&self) {
        self.progress_tx.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Something a checkpoint records changed.
    pub fn mark_checkpoint_dirty(&self) {
        self.checkpoint_dirty.store(true, Ordering::SeqCst);
    }

    /// [`LogInner::poison`]: the store's state and the log stop together.
    pub fn poison(&self, what: String) -> StorageError {
        self.log.poison(what)
    }

    /// [`LogInner::check`].
    pub fn check(
        &self,
        holds: bool,
        invariant: impl FnOnce() -> String,
    ) -> Result<(), StorageError> {
        self.log.check(holds, invariant)
    }

    /// [`LogInner::panic_guard`].
    pub fn panic_guard(&self, what: &'static str) -> PanicGuard<'_> {
        self.log.panic_guard(what)
    }

    /// [`LogInner::lock_frozen`].
    pub fn lock_frozen<'a, T>(&self, m: &'a Mutex<T>) -> MutexGuard<'a, T> {
        self.log.lock_frozen(m)
    }

    /// [`LogInner::read_frozen`].
    pub fn read_frozen<'a, T>(&self, m: &'a RwLock<T>) -> RwLockReadGuard<'a, T> {
        self.log.read_frozen(m)
    }

    /// Every registered partition, in no order.
    pub fn partitions(&self) -> Result<Vec<Arc<PartitionInner>>, StorageError> {
        Ok(read(&self.registry)?.values().cloned().collect())
    }

    /// Write the recovery checkpoint: fsync every index file that changed,
    /// then atomically replace the checkpoint file. Returns the log position
    /// it records.
    pub fn write_checkpoint(&self) -> Result<u64, StorageError> {
        self.checkpoint(false)
    }

    /// [`Self::write_checkpoint`]; `closing` (shutdown) snapshots the
    /// producer state of every partition whose state changed since its last
    /// snapshot, so the next open replays nothing.
    ///
    /// Order: producer-state snapshots due (written, synced, renamed; the
    /// folder fsync'd), the aborted-transaction folder if a file was made,
    /// the index and aborted-transaction files, the leader-epoch file, then
    /// the checkpoint file; only once it is durable are the snapshots it
    /// made superfluous removed.
    fn checkpoint(&self, closing: bool) -> Result<u64, StorageError> {
        let _serial = lock(&self.checkpoint_lock)?;
        if let Some(r) = self.log.poisoned() {
            return Err(LogInner::poisoned_error(&r));
        }
        self.checkpoint_dirty.store(false, Ordering::SeqCst);
        let position = self.log.durable_tx.borrow().position;
        let parts = self.partitions()?;
        let mut cp = Checkpoint {
            position,
            partitions: Vec::with_capacity(parts.len()),
        };
        let mut recorded = Vec::with_capacity(parts.len());
        let mut snapshots = Vec::new();
        let mut snapshot_parts = Vec::new();
        for p in &parts {
            let mut st = lock(&p.state)?;
            if st.removed() {
                continue;
            }
            if let Some((at, bytes)) = st.take_snapshot(closing) {
                snapshots.push((p.id, at, bytes));
                snapshot_parts.push(p.clone());
            }
            // The checkpoint vouches for the index up to the durable end:
            // its buffered entries go to the file before the fsync below.
            if let Err(e) = st.flush_index(self) {
                drop(st);
                return Err(e);
            }
            let summary = match st.index().summary(st.durable_end(), self.index_io()) {
                Ok(s) => s,
                Err(e) => {
                    drop(st);
                    return Err(self.poison(e.to_string()));
                }
            };
            cp.partitions.push(CheckpointPartition {
                id: p.id,
                index_end_offset: st.durable_end(),
                log_start: st.log_start(),
                summary: Some(summary),
            });
            recorded.push((p, st.log_start(), st.durable_end()));
        }
        let io = self.log.io.as_ref();
        if let Err(e) = crate::snapshots::write_many(&self.log.dir, &snapshots, io) {
            return Err(self.poison(e.to_string()));
        }
        // A truncation (or removal) after a snapshot was taken removed it
        // from its partition's list before its file existed: remove the file.
        let mut stale = false;
        for ((id, at, _), p) in snapshots.iter().zip(&snapshot_parts) {
            if !lock(&p.state)?.has_snapshot(*at) {
                crate::snapshots::remove(io, &crate::snapshots::path(&self.log.dir, *id, *at))?;
                stale = true;
            }
        }
        if stale {
            crate::snapshots::sync_folder(&self.log.dir, io)?;
        }
        if self.txn_dir_dirty.swap(false, Ordering::SeqCst) {
            let dir = self.log.dir.join(crate::aborted::TXN_INDEX_DIR);
            if let Err(e) = crate::io::durable::sync_dir(io, "storage::txn_index_dir_sync", &dir) {
                return Err(self.poison(format!("fsync of {}: {e}", dir.display())));
            }
        }
        // Index (and aborted-transaction) files closed since their last
        // write were synced when closed.
        if let Err(e) = self.index_files.sync_dirty(io) {
            return Err(self.poison(e.to_string()));
        }
        crate::epochs::write_learned(self)?;
        let bytes = cp.encode();
        let done = crate::io::durable::replace_file(
            io,
            [
                "storage::checkpoint_sync",
                "storage::checkpoint_rename",
                "storage::checkpoint_dir_sync",
            ],
            &self.log.dir.join(CHECKPOINT_TMP_FILE),
            &self.log.dir.join(CHECKPOINT_FILE),
            |f| io.write_all_at(f, &bytes, 0),
        );
        if let Err(e) = done {
            return Err(self.poison(format!(
                "writing the checkpoint in {} failed: {e}",
                self.log.dir.display()
            )));
        }
        // Only now, with the checkpoint durable, may segment deletion rely
        // on the log starts it recorded.
        let mut superseded = Vec::new();
        for (p, log_start, vouched_end) in recorded {
            let mut st = lock(&p.state)?;
            st.recorded_log_start(log_start);
            superseded.extend(st.superseded_snapshots(vouched_end));
        }
        // An older snapshot that comes back after a crash is never chosen
        // over the newer one the checkpoint vouched for: no folder fsync.
        for path in superseded {
            crate::snapshots::remove(io, &path)?;
        }
        let now_ms = self.opened.elapsed().as_millis() as u64;
        self.last_checkpoint_ms.store(now_ms, Ordering::SeqCst);
        Ok(position)
    }

    /// How long until a checkpoint is due; `None` when nothing changed.
    fn checkpoint_wait(&self) -> Option<Duration> {
        if !self.checkpoint_dirty.load(Ordering::SeqCst) {
            return None;
        }
        let since = (self.opened.elapsed().as_millis() as u64)
            .saturating_sub(self.last_checkpoint_ms.load(Ordering::SeqCst));
        Some(Duration::from_millis(
            self.log
                .config
                .index_checkpoint_interval_ms
                .saturating_sub(since),
        ))
    }

    /// Stop accepting appends, sync, checkpoint, and stop the background threads.
    pub fn shutdown(&self) -> Result<(), StorageError> {
        let synced = self.log.close();
        self.checkpoint_wake.1.notify_all();
        let handles = std::mem::take(&mut *lock(&self.threads)?);
        for h in handles {
            // A panic was caught in the thread and poisoned the log there.
            let _ = h.join();
        }
        synced?;
        self.checkpoint(true).map(|_| ())
    }
}

impl FlushListener for Store {
    /// Durability moved: each partition's durable end follows, and with it
    /// its high watermark, up to the partition's replication bound.
    fn flushed(&self, ends: &[(PartitionId, i64)]) -> Result<(), StorageError> {
        let parts: Vec<(Arc<PartitionInner>, i64)> = {
            let registry = read(&self.registry)?;
            ends.iter()
                .filter_map(|(id, end)| Some((registry.get(id)?.clone(), *end)))
                .collect()
        };
        let mut moved = false;
        for (p, end) in parts {
            moved |= p.mark_durable(end)?;
        }
        if moved {
            self.bump_progress();
        }
        Ok(())
    }
}

/// The checkpoint thread: every `index_checkpoint_interval_ms` while
/// something changed, fsync the index files and write the checkpoint. It
/// shares no lock with the flusher across an fsync, so a checkpoint never
/// delays the fdatasync that acknowledges a produce.
///
/// It holds the store only while it decides or checkpoints, never while it
/// waits: the flusher holds the log while it waits, and two threads taking
/// turns would keep a dropped store alive for ever.
fn checkpoint_main(weak: &Weak<Store>) {
    let Some(wake) = weak.upgrade().map(|s| s.checkpoint_wake.clone()) else {
        return;
    };
    loop {
        let wait = {
            let Some(store) = weak.upgrade() else { return };
            let Some(wait) = checkpoint_next_wait(&store) else {
                return;
            };
            if wait.is_zero() {
                // Errors poison the log and are reported there.
                let _ = store.write_checkpoint();
                continue;
            }
            wait
        };
        let Ok(guard) = wake.0.lock() else { return };
        let _ = wake.1.wait_timeout(guard, wait);
    }
}

/// How long the checkpoint thread may sleep; `None` once the log is closed.
fn checkpoint_next_wait(store: &Store) -> Option<Duration> {
    if store.log.is_closed() {
        return None;
    }
    let idle = Duration::from_millis(FLUSHER_IDLE_WAIT_MS);
    Some(match store.checkpoint_wait() {
        _ if store.log.poisoned().is_some() => idle,
        Some(wait) => wait.min(idle),
        None => idle,
    })
}
