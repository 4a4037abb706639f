//! The shared commit log: segment files, the writer that appends entries
//! under one lock, the flusher thread that group-commits with fdatasync, the
//! checkpoint thread that makes index files durable and writes the recovery
//! checkpoint, the durable position, and the poisoning that follows a failed
//! write or sync, a panic, or a broken invariant.
//!
//! Lock order (a thread holding one may take only those after it):
//! `maintenance_lock`, `checkpoint_lock`, `flush_lock`, the leader-epoch
//! file's `write_lock`, `registry`, a
//! partition's `state` (several only in partition-id order), `writer`,
//! `segments`, the index-file set (`IndexFiles`). `threads` and the
//! checkpoint thread's wake-up lock are taken alone. Poisoning takes
//! `writer`, so code that checks an invariant under `segments` lets go of it
//! first. A std lock that a panic poisoned is an error ([`lock`]), never
//! read past.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::error::StorageError;
use crate::format::{self, Checkpoint, CheckpointPartition, SEGMENT_HEADER_BYTES};
use crate::index::HOT_ENTRIES_MIN;
use crate::io::{FileIo, IndexFiles, IndexIo, durable};
use crate::partition::PartitionInner;
use crate::{Clock, LogConfig, PartitionId};

/// The hot-tail length that keeps `partitions` partitions' index entries
/// within `budget_bytes` (never below [`HOT_ENTRIES_MIN`]).
fn hot_entries_max(budget_bytes: u64, partitions: usize) -> usize {
    let per_entry = std::mem::size_of::<format::IndexEntry>() as u64;
    let share = budget_bytes / (partitions.max(1) as u64 * per_entry);
    usize::try_from(share)
        .unwrap_or(usize::MAX)
        .max(HOT_ENTRIES_MIN)
}

/// The longest the flusher sleeps before it re-checks its deadlines and
/// whether the log was dropped.
const FLUSHER_IDLE_WAIT_MS: u64 = 100;
/// Name of the recovery checkpoint under the data directory.
pub(crate) const CHECKPOINT_FILE: &str = "checkpoint";
/// Temporary name the checkpoint is written under before its rename.
pub(crate) const CHECKPOINT_TMP_FILE: &str = "checkpoint.tmp";

/// Lock a mutex. A panic while it was held may have left its data half
/// updated, so a poisoned lock is an error that callers propagate (and the
/// panic itself poisoned the log: see [`PanicGuard`]).
pub(crate) fn lock<T>(m: &Mutex<T>) -> Result<MutexGuard<'_, T>, StorageError> {
    Ok(weir_sync::lock(m)?)
}

/// Read-lock an RwLock (see [`lock`]).
pub(crate) fn read<T>(m: &RwLock<T>) -> Result<RwLockReadGuard<'_, T>, StorageError> {
    Ok(weir_sync::read(m)?)
}

/// Write-lock an RwLock (see [`lock`]).
pub(crate) fn write<T>(m: &RwLock<T>) -> Result<RwLockWriteGuard<'_, T>, StorageError> {
    Ok(weir_sync::write(m)?)
}

fn lock_poisoned_reason<T>() -> String {
    weir_sync::PoisonedLock::of::<T>().to_string()
}

/// Poisons the log when its thread unwinds out of the scope it guards: a
/// panic in the middle of an append, a sync or maintenance may have left
/// state half updated, and nothing may be written on top of it.
pub(crate) struct PanicGuard<'a> {
    log: &'a LogInner,
    what: &'static str,
}

impl Drop for PanicGuard<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.log.poison(format!(
                "a panic in {} (its message is on stderr)",
                self.what
            ));
        }
    }
}

/// The text of a caught panic.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_string())
}

/// An I/O error with what was being done.
pub(crate) fn io_err(context: impl Into<String>, e: std::io::Error) -> StorageError {
    StorageError::Io {
        context: context.into(),
        source: Arc::new(e),
    }
}

/// One segment file of the commit log.
#[derive(Debug)]
pub(crate) struct Segment {
    /// Global position of the segment's first entry.
    pub base: u64,
    pub file: File,
    pub path: PathBuf,
}

impl Segment {
    /// File offset of a global position inside this segment.
    pub fn file_offset(&self, position: u64) -> u64 {
        SEGMENT_HEADER_BYTES + position.saturating_sub(self.base)
    }
}

/// The segment file name for a base position.
pub(crate) fn segment_file_name(base: u64) -> String {
    format!("{base:020}.log")
}

/// The durable position of the log, watched by [`crate::DurableWait`].
#[derive(Debug, Clone, Default)]
pub(crate) struct Durable {
    /// Every entry ending at or before this global position is on disk.
    pub position: u64,
    /// Set once a write or fsync failed.
    pub poisoned: Option<Arc<str>>,
}

/// Unsynced appends of one partition since the last sync round.
pub(crate) struct Marker {
    pub partition: Arc<PartitionInner>,
    /// Offset after the partition's last written batch.
    pub end_offset: i64,
    /// The partition waits for fsync before acknowledging (`flush.messages` = 1).
    pub strict: bool,
    pub appends: u64,
    pub flush_messages: u64,
    pub flush_ms: u64,
    pub first_at: Instant,
}

/// What an append tells the flusher.
pub(crate) struct MarkerUpdate {
    pub partition: Arc<PartitionInner>,
    pub end_offset: i64,
    pub flush_messages: u64,
    pub flush_ms: u64,
}

/// Where a write to the log went.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Written {
    /// Global position of the first byte written.
    pub position: u64,
    /// Base position of the segment it went to (a write never spans two).
    pub segment: u64,
}

/// State behind the writer lock.
pub(crate) struct Writer {
    pub active: Arc<Segment>,
    pub active_created_ms: i64,
    /// Global position where the next entry goes.
    pub write_pos: u64,
    /// Position covered by the last successful sync round.
    pub synced_pos: u64,
    pub pending: HashMap<PartitionId, Marker>,
    pub strict_pending: bool,
    /// Segments rolled since the last sync round; they need one more fdatasync.
    pub rolled: Vec<Arc<Segment>>,
    /// A segment file was created or deleted since the last directory sync.
    pub dir_dirty: bool,
    pub poisoned: Option<Arc<str>>,
    pub sync_requested: bool,
    pub closed: bool,
}

/// The commit log shared by every handle.
pub(crate) struct LogInner {
    pub dir: PathBuf,
    pub log_dir: PathBuf,
    pub index_dir: PathBuf,
    pub config: LogConfig,
    pub clock: Arc<dyn Clock>,
    pub io: Arc<dyn FileIo>,
    pub writer: Mutex<Writer>,
    pub flush_cv: Condvar,
    /// Every segment by base position; readers clone the files they need.
    pub segments: RwLock<BTreeMap<u64, Arc<Segment>>>,
    /// Serializes sync rounds so the durable position only moves forward.
    flush_lock: Mutex<()>,
    /// Serializes checkpoint writes.
    checkpoint_lock: Mutex<()>,
    /// Serializes maintenance runs: retention, compaction and the cleaner
    /// each assume no other run moves index entries under them.
    pub maintenance_lock: Mutex<()>,
    /// When the log was opened; `last_checkpoint_ms` counts from it.
    opened: Instant,
    /// When the last checkpoint was written, in ms since `opened`. An atomic,
    /// not a lock: the checkpoint thread reads it under the writer lock while
    /// a checkpoint takes partition locks (which appends hold while they take
    /// the writer lock), so a lock here would be one more order to keep.
    last_checkpoint_ms: AtomicU64,
    /// The leader-epoch file (`epochs.rs`).
    pub leader_epochs: crate::epochs::LeaderEpochsFile,
    /// Wakes the checkpoint thread (shutdown, poison). Not waited on with a
    /// lock of the log, so that thread holds no reference to the log while
    /// it waits (see [`checkpoint_main`]).
    checkpoint_wake: Arc<(Mutex<()>, Condvar)>,
    /// Something a checkpoint records changed since the last one.
    pub checkpoint_dirty: AtomicBool,
    pub registry: RwLock<HashMap<PartitionId, Arc<PartitionInner>>>,
    /// The partitions' index files, a bounded set held open.
    pub index_files: IndexFiles,
    /// The most index entries each partition keeps in memory: the index
    /// memory budget shared out over the partitions (see [`Self::share_index_memory`]).
    index_hot_entries_max: AtomicUsize,
    pub durable_tx: watch::Sender<Durable>,
    pub progress_tx: watch::Sender<u64>,
    /// The background threads (flusher, checkpoint), joined on shutdown.
    pub threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

/// The pieces [`LogInner::new`] needs from recovery.
pub(crate) struct LogParts {
    pub dir: PathBuf,
    pub config: LogConfig,
    pub clock: Arc<dyn Clock>,
    pub io: Arc<dyn FileIo>,
    pub segments: BTreeMap<u64, Arc<Segment>>,
    pub active: Arc<Segment>,
    pub write_pos: u64,
    pub partitions: HashMap<PartitionId, Arc<PartitionInner>>,
    pub index_files: IndexFiles,
}

impl LogInner {
    pub fn new(p: LogParts) -> Self {
        let now = p.clock.now_ms();
        let hot_max = hot_entries_max(p.config.index_memory_bytes, p.partitions.len());
        let (durable_tx, _) = watch::channel(Durable {
            position: p.write_pos,
            poisoned: None,
        });
        let (progress_tx, _) = watch::channel(0u64);
        Self {
            log_dir: p.dir.join("log"),
            leader_epochs: crate::epochs::LeaderEpochsFile::new(&p.dir),
            index_dir: p.dir.join("index"),
            dir: p.dir,
            config: p.config,
            clock: p.clock,
            io: p.io,
            writer: Mutex::new(Writer {
                active: p.active,
                active_created_ms: now,
                write_pos: p.write_pos,
                synced_pos: p.write_pos,
                pending: HashMap::new(),
                strict_pending: false,
                rolled: Vec::new(),
                dir_dirty: false,
                poisoned: None,
                sync_requested: false,
                closed: false,
            }),
            flush_cv: Condvar::new(),
            segments: RwLock::new(p.segments),
            flush_lock: Mutex::new(()),
            checkpoint_lock: Mutex::new(()),
            maintenance_lock: Mutex::new(()),
            opened: Instant::now(),
            last_checkpoint_ms: AtomicU64::new(0),
            checkpoint_wake: Arc::new((Mutex::new(()), Condvar::new())),
            checkpoint_dirty: AtomicBool::new(true),
            registry: RwLock::new(p.partitions),
            index_hot_entries_max: AtomicUsize::new(hot_max),
            index_files: p.index_files,
            durable_tx,
            progress_tx,
            threads: Mutex::new(Vec::new()),
        }
    }

    /// How a partition reaches its index file.
    pub fn index_io(&self) -> IndexIo<'_> {
        IndexIo {
            files: &self.index_files,
            io: self.io.as_ref(),
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
            hot_entries_max(self.config.index_memory_bytes, partitions),
            Ordering::Relaxed,
        );
    }

    /// Start the background threads: the flusher (group commit) and the
    /// checkpoint thread, apart so that index fsyncs never delay an fdatasync
    /// that producers wait for.
    pub fn start_flusher(self: &Arc<Self>) -> Result<(), StorageError> {
        let flusher = self.spawn_guarded("weir-flusher", flusher_main)?;
        let checkpoint = self.spawn_guarded("weir-checkpoint", checkpoint_main)?;
        lock(&self.threads)?.extend([flusher, checkpoint]);
        Ok(())
    }

    /// Spawn a background thread whose panic poisons the log, with the
    /// panic's message, instead of leaving the log half alive.
    fn spawn_guarded(
        self: &Arc<Self>,
        name: &'static str,
        body: fn(&Weak<LogInner>),
    ) -> Result<std::thread::JoinHandle<()>, StorageError> {
        let weak = Arc::downgrade(self);
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                let run = std::panic::AssertUnwindSafe(|| body(&weak));
                if let Err(payload) = std::panic::catch_unwind(run)
                    && let Some(log) = weak.upgrade()
                {
                    let message = panic_message(payload.as_ref());
                    log.poison(format!("the {name} thread panicked: {message}"));
                }
            })
            .map_err(|e| io_err(format!("spawning the {name} thread"), e))
    }

    /// A guard that poisons the log if `what` panics before it is dropped.
    pub fn panic_guard(&self, what: &'static str) -> PanicGuard<'_> {
        PanicGuard { log: self, what }
    }

    /// Lock a partition state for a report or setting that cannot fail
    /// (offsets, configs). A lock a panic poisoned poisons the log first, so
    /// nothing is written on top of the half-updated state, and the values
    /// as the panic left them are used (they no longer move).
    pub fn lock_frozen<'a, T>(&self, m: &'a Mutex<T>) -> MutexGuard<'a, T> {
        m.lock().unwrap_or_else(|e| {
            self.poison(lock_poisoned_reason::<T>());
            e.into_inner()
        })
    }

    /// [`Self::lock_frozen`] for the partition registry.
    pub fn read_frozen<'a, T>(&self, m: &'a RwLock<T>) -> RwLockReadGuard<'a, T> {
        m.read().unwrap_or_else(|e| {
            self.poison(lock_poisoned_reason::<T>());
            e.into_inner()
        })
    }

    /// Check an invariant of what is written or read back. A broken one
    /// means memory and disk disagree: the log stops taking writes, naming
    /// the invariant, rather than carry on and spread the damage.
    pub fn check(
        &self,
        holds: bool,
        invariant: impl FnOnce() -> String,
    ) -> Result<(), StorageError> {
        if holds {
            return Ok(());
        }
        Err(self.poison(format!("invariant broken: {}", invariant())))
    }

    /// Tell waiters that the log moved (high watermark or log start).
    pub fn bump_progress(&self) {
        self.progress_tx.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// The error every write gets once the log is poisoned.
    pub fn poisoned_error(reason: &Arc<str>) -> StorageError {
        StorageError::Poisoned {
            reason: reason.clone(),
        }
    }

    /// Record a write or sync failure: refuse every later write, fail every
    /// pending durable wait, and say what to do. Never retried: after a
    /// failed fsync the kernel may have dropped the dirty pages.
    pub fn poison(&self, what: String) -> StorageError {
        let reason: Arc<str> = match self.writer.lock() {
            Ok(mut w) => w
                .poisoned
                .get_or_insert_with(|| Arc::from(what.as_str()))
                .clone(),
            // A panic poisoned the writer lock itself: every write already
            // fails on it, so only waiters are left to tell.
            Err(_) => Arc::from(what.as_str()),
        };
        self.announce_poison(&reason);
        Self::poisoned_error(&reason)
    }

    /// [`Self::poison`] for a caller that holds the writer lock.
    fn poison_locked(&self, mut w: MutexGuard<'_, Writer>, what: String) -> StorageError {
        let reason = w
            .poisoned
            .get_or_insert_with(|| Arc::from(what.as_str()))
            .clone();
        drop(w);
        self.announce_poison(&reason);
        Self::poisoned_error(&reason)
    }

    fn announce_poison(&self, reason: &Arc<str>) {
        let mut first = false;
        self.durable_tx.send_modify(|d| {
            if d.poisoned.is_none() {
                d.poisoned = Some(reason.clone());
                first = true;
            }
        });
        if first {
            tracing::error!(
                dir = %self.dir.display(),
                %reason,
                "commit log poisoned: writes are refused until restart; check the disk \
                 (dmesg, free space), then restart the broker to recover from the last durable point"
            );
        }
        self.flush_cv.notify_all();
        self.checkpoint_wake.1.notify_all();
    }

    /// Append `buf` (whole entries) at the log head, rolling the segment first
    /// when it is full or old. Returns the global position of `buf`'s first byte.
    pub fn write_entries(
        &self,
        buf: &[u8],
        marker: Option<MarkerUpdate>,
    ) -> Result<Written, StorageError> {
        self.write_entries_marked(buf, marker)
    }

    /// [`Self::write_entries`] for entries of several partitions at once:
    /// one write to the log, and one marker per partition for the flusher.
    pub fn write_entries_marked(
        &self,
        buf: &[u8],
        markers: impl IntoIterator<Item = MarkerUpdate>,
    ) -> Result<Written, StorageError> {
        let mut w = lock(&self.writer)?;
        if let Some(r) = &w.poisoned {
            return Err(Self::poisoned_error(r));
        }
        if w.closed {
            return Err(StorageError::Poisoned {
                reason: Arc::from("the commit log is shut down"),
            });
        }
        let now_ms = self.clock.now_ms();
        let used = w.write_pos - w.active.base;
        let full = used + buf.len() as u64 > self.config.segment_bytes;
        let old = now_ms.saturating_sub(w.active_created_ms) >= self.config.segment_ms as i64;
        if used > 0 && (full || old) {
            self.roll(&mut w, now_ms)?;
        }
        let position = w.write_pos;
        // Paired with the readers' check that a batch lies inside its segment.
        if position < w.active.base {
            let reason = format!(
                "invariant broken: write position {position} lies before the active segment {}",
                w.active.path.display()
            );
            return Err(self.poison_locked(w, reason));
        }
        let offset = w.active.file_offset(position);
        let written = crate::io::failpoint_for(self.io.as_ref(), "storage::segment_write")
            .and_then(|()| self.io.write_all_at(&w.active.file, buf, offset));
        if let Err(e) = written {
            let reason = format!(
                "write of {} bytes to {} failed: {e}",
                buf.len(),
                w.active.path.display()
            );
            return Err(self.poison_locked(w, reason));
        }
        w.write_pos += buf.len() as u64;
        let mut wake = false;
        for m in markers {
            let strict = m.flush_messages <= 1;
            w.strict_pending |= strict;
            let id = m.partition.id;
            let entry = w.pending.entry(id).or_insert_with(|| Marker {
                partition: m.partition.clone(),
                end_offset: m.end_offset,
                strict,
                appends: 0,
                flush_messages: m.flush_messages,
                flush_ms: m.flush_ms,
                first_at: Instant::now(),
            });
            entry.end_offset = entry.end_offset.max(m.end_offset);
            entry.strict |= strict;
            entry.appends += 1;
            entry.flush_messages = m.flush_messages;
            entry.flush_ms = m.flush_ms;
            wake |= strict || entry.appends >= entry.flush_messages || entry.appends == 1;
        }
        if wake {
            self.flush_cv.notify_one();
        }
        Ok(Written {
            position,
            segment: w.active.base,
        })
    }

    fn roll(&self, w: &mut Writer, now_ms: i64) -> Result<(), StorageError> {
        let base = w.write_pos;
        let path = self.log_dir.join(segment_file_name(base));
        let made = self
            .io
            .open(
                &path,
                OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(true),
            )
            .and_then(|f| {
                self.io
                    .write_all_at(&f, &format::segment_header(), 0)
                    .map(|()| f)
            });
        let file = match made {
            Ok(f) => f,
            Err(e) => {
                let reason: Arc<str> =
                    Arc::from(format!("creating segment {} failed: {e}", path.display()));
                w.poisoned = Some(reason.clone());
                self.announce_poison(&reason);
                return Err(Self::poisoned_error(&reason));
            }
        };
        let seg = Arc::new(Segment { base, file, path });
        write(&self.segments)?.insert(base, seg.clone());
        let old = std::mem::replace(&mut w.active, seg);
        w.rolled.push(old);
        w.active_created_ms = now_ms;
        w.dir_dirty = true;
        tracing::debug!(base, "rolled commit-log segment");
        Ok(())
    }

    /// One group commit: fdatasync everything written so far (from every
    /// partition), then advance the durable position and the partitions'
    /// high watermarks. Returns the durable position.
    pub fn flush_round(&self) -> Result<u64, StorageError> {
        let _round = lock(&self.flush_lock)?;
        let (target, markers, files, dir_dirty) = {
            let mut w = lock(&self.writer)?;
            if let Some(r) = &w.poisoned {
                return Err(Self::poisoned_error(r));
            }
            if w.write_pos == w.synced_pos && w.rolled.is_empty() && !w.dir_dirty {
                return Ok(w.synced_pos);
            }
            let markers = std::mem::take(&mut w.pending);
            w.strict_pending = false;
            let mut files = std::mem::take(&mut w.rolled);
            files.push(w.active.clone());
            let dir_dirty = std::mem::take(&mut w.dir_dirty);
            (w.write_pos, markers, files, dir_dirty)
        };
        for seg in &files {
            if let Err(e) = durable::sync_data(self.io.as_ref(), "storage::segment_sync", &seg.file)
            {
                return Err(self.poison(format!("fdatasync of {} failed: {e}", seg.path.display())));
            }
        }
        if dir_dirty
            && let Err(e) =
                durable::sync_dir(self.io.as_ref(), "storage::log_dir_sync", &self.log_dir)
        {
            return Err(self.poison(format!("fsync of {} failed: {e}", self.log_dir.display())));
        }
        lock(&self.writer)?.synced_pos = target;
        let mut moved = false;
        for m in markers.values() {
            moved |= m.partition.mark_durable(m.end_offset)?;
        }
        if moved {
            self.bump_progress();
        }
        self.durable_tx
            .send_modify(|d| d.position = d.position.max(target));
        Ok(target)
    }

    /// Wait for the flusher to cover everything written so far, or do the
    /// round here; used where durability is needed on return.
    pub fn sync_now(&self) -> Result<u64, StorageError> {
        self.flush_round()
    }

    /// Write the recovery checkpoint: fsync every index file that changed,
    /// then atomically replace the checkpoint file. Returns the log position
    /// it records.
    pub fn write_checkpoint(&self) -> Result<u64, StorageError> {
        let _serial = lock(&self.checkpoint_lock)?;
        if let Some(r) = &lock(&self.writer)?.poisoned {
            return Err(Self::poisoned_error(r));
        }
        self.checkpoint_dirty.store(false, Ordering::SeqCst);
        let position = self.durable_tx.borrow().position;
        let parts: Vec<Arc<PartitionInner>> = read(&self.registry)?.values().cloned().collect();
        let mut cp = Checkpoint {
            position,
            partitions: Vec::with_capacity(parts.len()),
        };
        let mut recorded = Vec::with_capacity(parts.len());
        for p in &parts {
            let mut st = lock(&p.state)?;
            if st.removed {
                continue;
            }
            // The checkpoint vouches for the index up to durable_end: its
            // buffered entries go to the file before the fsync below.
            if let Err(e) = st.flush_index(self) {
                drop(st);
                return Err(e);
            }
            let summary = match st.index.summary(st.durable_end, self.index_io()) {
                Ok(s) => s,
                Err(e) => {
                    drop(st);
                    return Err(self.poison(e.to_string()));
                }
            };
            cp.partitions.push(CheckpointPartition {
                id: p.id,
                index_end_offset: st.durable_end,
                log_start: st.log_start,
                summary: Some(summary),
            });
            recorded.push((p, st.log_start));
        }
        // Index files closed since their last write were synced when closed.
        if let Err(e) = self.index_files.sync_dirty(self.io.as_ref()) {
            return Err(self.poison(e.to_string()));
        }
        crate::epochs::write_learned(self)?;
        let bytes = cp.encode();
        let done = durable::replace_file(
            self.io.as_ref(),
            [
                "storage::checkpoint_sync",
                "storage::checkpoint_rename",
                "storage::checkpoint_dir_sync",
            ],
            &self.dir.join(CHECKPOINT_TMP_FILE),
            &self.dir.join(CHECKPOINT_FILE),
            |f| self.io.write_all_at(f, &bytes, 0),
        );
        if let Err(e) = done {
            return Err(self.poison(format!(
                "writing the checkpoint in {} failed: {e}",
                self.dir.display()
            )));
        }
        // Only now, with the checkpoint durable, may segment deletion rely
        // on the log starts it recorded.
        for (p, log_start) in recorded {
            lock(&p.state)?.recorded_log_start(log_start);
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
            self.config
                .index_checkpoint_interval_ms
                .saturating_sub(since),
        ))
    }

    /// Stop accepting appends, sync, checkpoint, and stop the background threads.
    pub fn shutdown(&self) -> Result<(), StorageError> {
        let synced = self.flush_round();
        lock(&self.writer)?.closed = true;
        self.flush_cv.notify_all();
        self.checkpoint_wake.1.notify_all();
        let handles = std::mem::take(&mut *lock(&self.threads)?);
        for h in handles {
            // A panic was caught in the thread and poisoned the log there.
            let _ = h.join();
        }
        synced?;
        self.write_checkpoint().map(|_| ())
    }
}

/// Decide whether a sync round is due now, and otherwise how long to sleep.
fn sync_due(w: &Writer, now: Instant) -> (bool, Duration) {
    if w.sync_requested || w.strict_pending {
        return (true, Duration::ZERO);
    }
    let mut wait = Duration::from_millis(FLUSHER_IDLE_WAIT_MS);
    for m in w.pending.values() {
        if m.appends >= m.flush_messages.max(1) {
            return (true, Duration::ZERO);
        }
        let deadline = m.first_at.checked_add(Duration::from_millis(m.flush_ms));
        match deadline {
            Some(d) if d <= now => return (true, Duration::ZERO),
            Some(d) => wait = wait.min(d - now),
            None => {}
        }
    }
    (false, wait)
}

fn flusher_main(weak: &Weak<LogInner>) {
    loop {
        let Some(log) = weak.upgrade() else { return };
        {
            let Ok(w) = lock(&log.writer) else { return };
            if w.closed {
                return;
            }
            let (due, wait) = if w.poisoned.is_some() {
                (false, Duration::from_millis(FLUSHER_IDLE_WAIT_MS))
            } else {
                sync_due(&w, Instant::now())
            };
            if !due {
                // A poisoned writer lock ends the thread at the next turn.
                let _ = log.flush_cv.wait_timeout(w, wait);
                continue;
            }
        }
        // Errors poison the log and are reported there; waiters see them.
        let _ = log.flush_round();
    }
}

/// The checkpoint thread: every `index_checkpoint_interval_ms` while
/// something changed, fsync the index files and write the checkpoint. It
/// shares no lock with the flusher across an fsync, so a checkpoint never
/// delays the fdatasync that acknowledges a produce.
///
/// It holds the log only while it decides or checkpoints, never while it
/// waits: the flusher holds it while it waits, and two threads taking turns
/// would keep a dropped log alive for ever.
fn checkpoint_main(weak: &Weak<LogInner>) {
    let Some(wake) = weak.upgrade().map(|log| log.checkpoint_wake.clone()) else {
        return;
    };
    loop {
        let wait = {
            let Some(log) = weak.upgrade() else { return };
            let Some(wait) = checkpoint_next_wait(&log) else {
                return;
            };
            if wait.is_zero() {
                // Errors poison the log and are reported there.
                let _ = log.write_checkpoint();
                continue;
            }
            wait
        };
        let Ok(guard) = wake.0.lock() else { return };
        let _ = wake.1.wait_timeout(guard, wait);
    }
}

/// How long the checkpoint thread may sleep; `None` once the log is closed.
fn checkpoint_next_wait(log: &LogInner) -> Option<Duration> {
    let w = lock(&log.writer).ok()?;
    if w.closed {
        return None;
    }
    let idle = Duration::from_millis(FLUSHER_IDLE_WAIT_MS);
    Some(match log.checkpoint_wait() {
        _ if w.poisoned.is_some() => idle,
        Some(wait) => wait.min(idle),
        None => idle,
    })
}
