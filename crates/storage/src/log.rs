//! The commit log, the bottom layer: segment files, the writer that appends
//! entries under one lock and returns their positions, the flusher thread
//! that group-commits with fdatasync, the durable position, and the
//! poisoning that follows a failed write or sync, a panic, or a broken
//! invariant.
//!
//! It deals in bytes and positions only. Each entry names the stream it
//! belongs to (a [`PartitionId`], opaque here) so that a sync round can say
//! how far each stream became durable; that report goes up as plain data,
//! `(stream, end offset)` pairs, to the [`FlushListener`] the layer above
//! installs (`store.rs`). Partitions, their indexes and the checkpoint are
//! not this module's business.
//!
//! Lock order (a thread holding one may take only those after it; the whole
//! order, with the layers above, is in `store.rs`): `flush_lock`, then
//! whatever the listener takes, `writer`, `segments`. `threads` is taken
//! alone. Poisoning takes `writer`, so code that checks an invariant under
//! `segments` lets go of it first. A std lock that a panic poisoned is an
//! error ([`lock`]), never read past.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::{
    Arc, Condvar, Mutex, MutexGuard, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak,
};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::error::StorageError;
use crate::format::{self, SEGMENT_HEADER_BYTES};
use crate::io::{FileIo, durable};
use crate::{Clock, LogConfig, PartitionId};

/// The longest the flusher sleeps before it re-checks its deadlines and
/// whether the log was dropped.
pub(crate) const FLUSHER_IDLE_WAIT_MS: u64 = 100;

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
/// state half updated (in this layer or the ones above), and nothing may be
/// written on top of it.
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
    /// File offset of a global position inside this segment. Saturating:
    /// a position read from a damaged index gives an offset past the end of
    /// the file, whose read fails, rather than an overflow.
    pub fn file_offset(&self, position: u64) -> u64 {
        SEGMENT_HEADER_BYTES.saturating_add(position.saturating_sub(self.base))
    }
}

/// Create (or empty) the segment file at `path` and write its header.
pub(crate) fn create_segment_file(io: &dyn FileIo, path: &Path) -> std::io::Result<File> {
    let file = io.open(
        path,
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true),
    )?;
    io.write_all_at(&file, &format::segment_header(), 0)?;
    Ok(file)
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

/// Unsynced appends of one stream since the last sync round.
pub(crate) struct Marker {
    /// Offset after the stream's last written batch.
    pub end_offset: i64,
    /// The stream waits for fsync before acknowledging (`flush.messages` = 1).
    pub strict: bool,
    pub appends: u64,
    pub flush_messages: u64,
    pub flush_ms: u64,
    pub first_at: Instant,
}

/// What an append tells the flusher: which stream it wrote, how far, and
/// that stream's flush policy.
pub(crate) struct MarkerUpdate {
    pub stream: PartitionId,
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

/// Told, after each sync round and before the durable position moves, how
/// far each stream written since the last round is now durable.
pub(crate) trait FlushListener: Send + Sync {
    /// `ends` holds `(stream, offset after its last durable batch)`, a
    /// stream at most once.
    fn flushed(&self, ends: &[(PartitionId, i64)]) -> Result<(), StorageError>;
}

/// The commit log shared by every handle.
pub(crate) struct LogInner {
    pub dir: PathBuf,
    pub log_dir: PathBuf,
    pub config: LogConfig,
    pub clock: Arc<dyn Clock>,
    pub io: Arc<dyn FileIo>,
    pub writer: Mutex<Writer>,
    pub flush_cv: Condvar,
    /// Every segment by base position; readers clone the files they need.
    pub segments: RwLock<BTreeMap<u64, Arc<Segment>>>,
    /// Serializes sync rounds so the durable position only moves forward.
    flush_lock: Mutex<()>,
    /// Who hears how far each stream became durable (set once, by the layer
    /// above; weak, since that layer owns this log).
    listener: OnceLock<Weak<dyn FlushListener>>,
    pub durable_tx: watch::Sender<Durable>,
    /// The flusher thread, joined on close.
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
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
}

impl LogInner {
    pub fn new(p: LogParts) -> Self {
        let now = p.clock.now_ms();
        let (durable_tx, _) = watch::channel(Durable {
            position: p.write_pos,
            poisoned: None,
        });
        Self {
            log_dir: p.dir.join("log"),
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
            listener: OnceLock::new(),
            durable_tx,
            threads: Mutex::new(Vec::new()),
        }
    }

    /// Start the flusher thread (group commit), telling `listener` of each
    /// round. Called once, by the layer above once it exists.
    pub fn start_flusher(
        self: &Arc<Self>,
        listener: Weak<dyn FlushListener>,
    ) -> Result<(), StorageError> {
        if self.listener.set(listener).is_err() {
            return Err(self.poison("invariant broken: the flusher was started twice".into()));
        }
        let flusher = spawn_guarded(self, "weir-flusher", flusher_main, |log| log)?;
        lock(&self.threads)?.push(flusher);
        Ok(())
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
    }

    /// Why the log refuses writes, if it does.
    pub fn poisoned(&self) -> Option<Arc<str>> {
        self.durable_tx.borrow().poisoned.clone()
    }

    /// Whether [`Self::close`] ran.
    pub fn is_closed(&self) -> bool {
        // A writer lock a panic poisoned counts as closed: nothing more is written.
        self.writer.lock().map_or(true, |w| w.closed)
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
            let entry = w.pending.entry(m.stream).or_insert_with(|| Marker {
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
        let made = create_segment_file(self.io.as_ref(), &path);
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
    /// stream), tell the listener how far each stream is durable, then
    /// advance the durable position. Returns the durable position.
    pub fn flush_round(&self) -> Result<u64, StorageError> {
        let _round = lock(&self.flush_lock)?;
        let (target, synced, markers, files, dir_dirty) = {
            let mut w = lock(&self.writer)?;
            if let Some(r) = &w.poisoned {
                return Err(Self::poisoned_error(r));
            }
            if w.write_pos == w.synced_pos && w.rolled.is_empty() && !w.dir_dirty {
                return Ok(w.synced_pos);
            }
            let synced = w.synced_pos;
            let markers = std::mem::take(&mut w.pending);
            w.strict_pending = false;
            let mut files = std::mem::take(&mut w.rolled);
            files.push(w.active.clone());
            let dir_dirty = std::mem::take(&mut w.dir_dirty);
            (w.write_pos, synced, markers, files, dir_dirty)
        };
        let started = std::time::Instant::now();
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
        weir_metrics::metrics().group_commit(target.saturating_sub(synced), started.elapsed());
        lock(&self.writer)?.synced_pos = target;
        if !markers.is_empty()
            && let Some(listener) = self.listener.get().and_then(Weak::upgrade)
        {
            let ends: Vec<(PartitionId, i64)> =
                markers.iter().map(|(s, m)| (*s, m.end_offset)).collect();
            listener.flushed(&ends)?;
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

    /// Sync what is written, stop taking appends, and stop the flusher.
    /// Returns the sync's outcome once the thread is joined.
    pub fn close(&self) -> Result<u64, StorageError> {
        let synced = self.flush_round();
        lock(&self.writer)?.closed = true;
        self.flush_cv.notify_all();
        let handles = std::mem::take(&mut *lock(&self.threads)?);
        for h in handles {
            // A panic was caught in the thread and poisoned the log there.
            let _ = h.join();
        }
        synced
    }
}

/// Spawn a background thread that holds `owner` weakly, and whose panic
/// poisons the log (`log_of(owner)`), with the panic's message, instead of
/// leaving the log half alive.
pub(crate) fn spawn_guarded<T: Send + Sync + 'static>(
    owner: &Arc<T>,
    name: &'static str,
    body: fn(&Weak<T>),
    log_of: fn(&T) -> &LogInner,
) -> Result<std::thread::JoinHandle<()>, StorageError> {
    let weak = Arc::downgrade(owner);
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let run = std::panic::AssertUnwindSafe(|| body(&weak));
            if let Err(payload) = std::panic::catch_unwind(run)
                && let Some(owner) = weak.upgrade()
            {
                let message = panic_message(payload.as_ref());
                log_of(&owner).poison(format!("the {name} thread panicked: {message}"));
            }
        })
        .map_err(|e| io_err(format!("spawning the {name} thread"), e))
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
