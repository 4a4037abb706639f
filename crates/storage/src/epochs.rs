//! Leader epochs: each partition's cache of (leader epoch, start offset), as
//! Kafka's `LeaderEpochFileCache` keeps it, and the one file that persists
//! every partition's cache, `<data-dir>/leader-epochs`.
//!
//! The cache answers OffsetForLeaderEpoch (where an epoch ends: the start of
//! the next larger epoch, or the log end), and the epoch of an offset for
//! ListOffsets. It learns an epoch in three ways:
//! - [`crate::Partition::set_leader_epoch`] assigns it at the log end and
//!   writes the file before returning;
//! - an append whose batches carry an epoch above the latest one (Kafka's
//!   `maybeAssignEpochStartOffset`) adds it in memory; the next checkpoint
//!   writes the file before it vouches for those batches;
//! - recovery re-learns the epochs of the batches in the log tail it scans
//!   (past the last checkpoint, so past what the file is sure to hold).
//!
//! One file for the whole broker, not one per partition: 100,000 partitions
//! must not mean 100,000 more files. It is replaced atomically (temporary
//! file, fdatasync, rename, directory fsync); `docs/format.md` draws it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use uuid::Uuid;

use crate::PartitionId;
use crate::error::{EpochError, StorageError};
use crate::format::{FormatError, be_i32, be_i64, be_u32};
use crate::io::{FileIo, durable};
use crate::log::{io_err, lock, read};
use crate::partition::{PartitionInner, PartitionState};
use crate::store::Store;

/// Name of the leader-epoch file under the data directory.
pub(crate) const LEADER_EPOCHS_FILE: &str = "leader-epochs";
/// Temporary name the file is written under before its rename.
pub(crate) const LEADER_EPOCHS_TMP_FILE: &str = "leader-epochs.tmp";
/// Magic at the start of the leader-epoch file.
const LEADER_EPOCHS_MAGIC: [u8; 8] = *b"WEIREPC\0";
/// Version of the leader-epoch file layout (the only one there has been).
pub(crate) const LEADER_EPOCHS_VERSION: u32 = 1;
/// Bytes of the header: magic, version, partition count.
const HEADER_BYTES: usize = 16;
/// Bytes of a partition record before its entries: topic UUID, partition,
/// leader epoch, entry count.
const RECORD_HEADER_BYTES: usize = 28;
/// Bytes of one (epoch, start offset) entry.
const ENTRY_BYTES: usize = 12;
/// The largest leader-epoch file read back; a longer one is corruption.
const LEADER_EPOCHS_FILE_BYTES_MAX: u64 = 256 << 20;

/// Kafka's answer for an epoch the cache cannot place (`UNDEFINED_EPOCH`).
pub(crate) const UNDEFINED_EPOCH: i32 = -1;
/// Kafka's end offset for an epoch the cache cannot place (`UNDEFINED_EPOCH_OFFSET`).
pub(crate) const UNDEFINED_EPOCH_OFFSET: i64 = -1;

/// The first offset written under a leader epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EpochEntry {
    pub epoch: i32,
    pub start_offset: i64,
}

/// One partition's leader epochs, ordered: both epochs and start offsets
/// strictly increase from one entry to the next.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct EpochCache {
    entries: Vec<EpochEntry>,
}

impl EpochCache {
    /// A cache holding `entries`, or `None` when they are not ordered.
    fn from_entries(entries: Vec<EpochEntry>) -> Option<Self> {
        let cache = Self { entries };
        cache.is_ordered().then_some(cache)
    }

    fn is_ordered(&self) -> bool {
        let valid = |e: &EpochEntry| e.epoch >= 0 && e.start_offset >= 0;
        self.entries.iter().all(valid)
            && self
                .entries
                .windows(2)
                .all(|w| w[0].epoch < w[1].epoch && w[0].start_offset < w[1].start_offset)
    }

    pub fn entries(&self) -> &[EpochEntry] {
        &self.entries
    }

    pub fn latest(&self) -> Option<EpochEntry> {
        self.entries.last().copied()
    }

    /// Record that `epoch` starts at `start_offset` (Kafka's `assign`). A
    /// repeat of the latest epoch at or after its start changes nothing;
    /// otherwise entries that would break the order (an epoch at or above
    /// `epoch`, or a start at or after `start_offset`) are dropped first.
    /// Returns whether the cache changed. Negative values are ignored.
    pub fn assign(&mut self, epoch: i32, start_offset: i64) -> bool {
        if epoch < 0 || start_offset < 0 {
            return false;
        }
        if self
            .latest()
            .is_some_and(|l| l.epoch == epoch && start_offset >= l.start_offset)
        {
            return false;
        }
        while self
            .latest()
            .is_some_and(|l| l.epoch >= epoch || l.start_offset >= start_offset)
        {
            self.entries.pop();
        }
        self.entries.push(EpochEntry {
            epoch,
            start_offset,
        });
        debug_assert!(self.is_ordered(), "epoch cache out of order: {self:?}");
        true
    }

    /// Assign `epoch` at `start_offset` only when it is above every epoch
    /// known: what an appended or recovered batch teaches the cache.
    pub fn learn(&mut self, epoch: i32, start_offset: i64) -> bool {
        let newer = self.latest().is_none_or(|l| epoch > l.epoch);
        newer && self.assign(epoch, start_offset)
    }

    /// Forget every epoch that starts at or after `end_offset` (the log was
    /// cut there). Returns whether the cache changed.
    pub fn truncate_from_end(&mut self, end_offset: i64) -> bool {
        if end_offset < 0 || self.latest().is_none_or(|l| l.start_offset < end_offset) {
            return false;
        }
        self.entries.retain(|e| e.start_offset < end_offset);
        true
    }

    /// Forget epochs wholly below `start_offset` (the log start moved there),
    /// keeping the one that covers it with its start moved up to
    /// `start_offset` (Kafka's `truncateFromStart`). Returns whether the cache changed.
    pub fn truncate_from_start(&mut self, start_offset: i64) -> bool {
        let below = self
            .entries
            .partition_point(|e| e.start_offset <= start_offset);
        let Some(covering) = below.checked_sub(1).and_then(|i| self.entries.get(i)) else {
            return false;
        };
        let kept = EpochEntry {
            epoch: covering.epoch,
            start_offset,
        };
        if below == 1 && *covering == kept {
            return false;
        }
        self.entries.splice(..below, [kept]);
        debug_assert!(self.is_ordered(), "epoch cache out of order: {self:?}");
        true
    }

    /// Where `requested` ends, as Kafka's `endOffsetFor` answers it: the
    /// latest epoch ends at `log_end`; an older one at the start of the next
    /// larger epoch, answered with the largest known epoch at or below it; an
    /// epoch below every known one at the start of the first (its data is
    /// gone); -1 ("undefined") and an epoch above every known one, or any
    /// epoch of an empty cache, are (-1, -1).
    pub fn end_offset_for(&self, requested: i32, log_end: i64) -> (i32, i64) {
        const UNDEFINED: (i32, i64) = (UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET);
        if requested == UNDEFINED_EPOCH {
            return UNDEFINED;
        }
        if self.latest().is_some_and(|l| l.epoch == requested) {
            return (requested, log_end);
        }
        let higher = self.entries.partition_point(|e| e.epoch <= requested);
        let Some(next) = self.entries.get(higher) else {
            return UNDEFINED;
        };
        match higher.checked_sub(1).and_then(|i| self.entries.get(i)) {
            Some(floor) => (floor.epoch, next.start_offset),
            None => (requested, next.start_offset),
        }
    }

    /// The epoch `offset` was written in: that of the last entry starting at
    /// or before it; `None` when it lies before every entry.
    pub fn epoch_for_offset(&self, offset: i64) -> Option<i32> {
        let i = self.entries.partition_point(|e| e.start_offset <= offset);
        i.checked_sub(1)
            .and_then(|i| self.entries.get(i))
            .map(|e| e.epoch)
    }
}

/// What the leader-epoch file holds for one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoredEpochs {
    pub id: PartitionId,
    /// The epoch the partition stamps into appended batches.
    pub leader_epoch: i32,
    pub cache: EpochCache,
}

/// Encode the leader-epoch file (see `docs/format.md`).
pub(crate) fn encode(records: &[StoredEpochs]) -> Vec<u8> {
    let entries: usize = records.iter().map(|r| r.cache.entries.len()).sum();
    let mut b =
        Vec::with_capacity(HEADER_BYTES + records.len() * RECORD_HEADER_BYTES + entries * 12 + 4);
    b.extend_from_slice(&LEADER_EPOCHS_MAGIC);
    b.extend_from_slice(&LEADER_EPOCHS_VERSION.to_be_bytes());
    b.extend_from_slice(&(records.len() as u32).to_be_bytes());
    for r in records {
        b.extend_from_slice(r.id.topic_id.as_bytes());
        b.extend_from_slice(&r.id.partition.to_be_bytes());
        b.extend_from_slice(&r.leader_epoch.to_be_bytes());
        b.extend_from_slice(&(r.cache.entries.len() as u32).to_be_bytes());
        for e in &r.cache.entries {
            b.extend_from_slice(&e.epoch.to_be_bytes());
            b.extend_from_slice(&e.start_offset.to_be_bytes());
        }
    }
    let crc = crc32c::crc32c(&b);
    b.extend_from_slice(&crc.to_be_bytes());
    b
}

/// Decode the leader-epoch file. The version is checked before the CRC: a
/// newer layout may put its CRC elsewhere, and must be reported as newer,
/// not as damaged.
pub(crate) fn decode(b: &[u8]) -> Result<Vec<StoredEpochs>, FormatError> {
    if b.get(..8) != Some(&LEADER_EPOCHS_MAGIC[..]) {
        return Err(FormatError::Corrupt("bad leader-epoch file magic".into()));
    }
    match be_u32(b, 8) {
        Some(LEADER_EPOCHS_VERSION) => {}
        Some(v) => {
            return Err(FormatError::Unsupported(format!(
                "leader-epoch file format version {v}; this build reads version \
                 {LEADER_EPOCHS_VERSION}"
            )));
        }
        None => return Err(FormatError::Corrupt("short leader-epoch file".into())),
    }
    decode_v1(b).map_err(FormatError::Corrupt)
}

fn decode_v1(b: &[u8]) -> Result<Vec<StoredEpochs>, String> {
    const SHORT: &str = "short leader-epoch file";
    let body_len = b.len().checked_sub(4).ok_or(SHORT)?;
    let body = b.get(..body_len).ok_or(SHORT)?;
    if crc32c::crc32c(body) != be_u32(b, body_len).ok_or(SHORT)? {
        return Err("leader-epoch file CRC mismatch".into());
    }
    let count = be_u32(body, 12).ok_or(SHORT)? as usize;
    // Every record takes at least its header: a count the bytes cannot hold
    // is refused before anything is allocated for it.
    if count > body_len.saturating_sub(HEADER_BYTES) / RECORD_HEADER_BYTES {
        return Err(format!("leader-epoch file announces {count} partitions"));
    }
    let mut records = Vec::with_capacity(count);
    let mut seen = std::collections::HashSet::with_capacity(count);
    let mut at = HEADER_BYTES;
    for _ in 0..count {
        let topic_id = body
            .get(at..at + 16)
            .and_then(|s| Uuid::from_slice(s).ok())
            .ok_or(SHORT)?;
        let id = PartitionId {
            topic_id,
            partition: be_i32(body, at + 16).ok_or(SHORT)?,
        };
        let leader_epoch = be_i32(body, at + 20).ok_or(SHORT)?;
        let n = be_u32(body, at + 24).ok_or(SHORT)? as usize;
        at += RECORD_HEADER_BYTES;
        if n > body_len.saturating_sub(at) / ENTRY_BYTES {
            return Err(format!("partition {id:?} announces {n} epochs"));
        }
        let mut entries = Vec::with_capacity(n);
        for _ in 0..n {
            entries.push(EpochEntry {
                epoch: be_i32(body, at).ok_or(SHORT)?,
                start_offset: be_i64(body, at + 4).ok_or(SHORT)?,
            });
            at += ENTRY_BYTES;
        }
        let cache = EpochCache::from_entries(entries)
            .ok_or_else(|| format!("the epochs of partition {id:?} are out of order"))?;
        if leader_epoch < 0 || !seen.insert(id) {
            return Err(format!("bad record for partition {id:?}"));
        }
        records.push(StoredEpochs {
            id,
            leader_epoch,
            cache,
        });
    }
    if at != body_len {
        return Err(format!(
            "{} bytes after the last partition record",
            body_len - at
        ));
    }
    Ok(records)
}

/// The leader-epoch file of one log: where it lives, the lock that keeps
/// two writers from replacing it out of order, and whether appends taught
/// a partition an epoch that the file does not hold yet.
pub(crate) struct LeaderEpochsFile {
    dir: PathBuf,
    /// Held from the snapshot of the caches to the rename, so the file never
    /// goes back to an older snapshot. Lock order: after `flush_lock`,
    /// before `registry`.
    write_lock: Mutex<()>,
    /// Set when an append added an epoch; the checkpoint writes the file
    /// before it vouches for that append. Starts set, so the first
    /// checkpoint after recovery writes what recovery re-learned.
    dirty: AtomicBool,
}

impl LeaderEpochsFile {
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
            write_lock: Mutex::new(()),
            dirty: AtomicBool::new(true),
        }
    }

    /// Something the file holds changed (an epoch learned, a partition removed).
    pub fn mark_dirty(&self) {
        self.dirty.store(true, Ordering::SeqCst);
    }
}

/// Read the leader-epoch file (absent: nothing stored yet). Reads only, so
/// recovery can refuse a newer version before it changes anything.
pub(crate) fn load(
    dir: &Path,
    io: &dyn FileIo,
) -> Result<HashMap<PartitionId, StoredEpochs>, StorageError> {
    let path = dir.join(LEADER_EPOCHS_FILE);
    let corrupt = |detail: String| StorageError::Corrupt {
        file: path.display().to_string(),
        detail,
    };
    let meta = match io.metadata(&path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(HashMap::new()),
        Err(e) => return Err(io_err(format!("reading {}", path.display()), e)),
    };
    if meta.len() > LEADER_EPOCHS_FILE_BYTES_MAX {
        return Err(corrupt(format!(
            "leader-epoch file of {} bytes",
            meta.len()
        )));
    }
    let bytes = io
        .read(&path)
        .map_err(|e| io_err(format!("reading {}", path.display()), e))?;
    let records = decode(&bytes).map_err(|e| match e {
        FormatError::Corrupt(d) => corrupt(d),
        FormatError::Unsupported(detail) => StorageError::UnsupportedFormat {
            file: path.display().to_string(),
            detail,
        },
    })?;
    Ok(records.into_iter().map(|r| (r.id, r)).collect())
}

/// Recovery, once each partition's log start and log end are final: put the
/// stored epochs under what the tail scan learned, drop epochs past the log
/// end (a cut tail) and below the log start, and keep the stored leader
/// epoch, assigned at the log end if no entry holds it any more.
///
/// A partition the file does not hold but whose log has batches was written
/// before leader epochs were kept (or before its first checkpoint, and then
/// its batches are all in the scanned tail): every batch such a build wrote
/// carries epoch 0, so its epochs start as (0, log start), and what the
/// scan learned goes on top.
pub(crate) fn attach(
    registry: &HashMap<PartitionId, Arc<PartitionInner>>,
    mut stored: HashMap<PartitionId, StoredEpochs>,
) -> Result<(), StorageError> {
    for (id, part) in registry {
        let mut st = lock(&part.state)?;
        let learned = st.take_epochs();
        let (leader_epoch, mut cache) = match stored.remove(id) {
            Some(s) => (s.leader_epoch, s.cache),
            None => {
                let mut cache = EpochCache::default();
                if st.log_end() > 0 {
                    cache.assign(0, st.log_start());
                }
                (0, cache)
            }
        };
        cache.truncate_from_end(st.log_end());
        for e in learned.entries() {
            cache.learn(e.epoch, e.start_offset);
        }
        cache.truncate_from_start(st.log_start());
        let latest = cache.latest().map_or(UNDEFINED_EPOCH, |l| l.epoch);
        let leader_epoch = leader_epoch.max(latest).max(0);
        if latest < leader_epoch {
            cache.assign(leader_epoch, st.log_end());
        }
        st.set_epochs(leader_epoch, cache);
    }
    Ok(())
}

/// Recovery's tail scan found `batch` at `base_offset`: learn its
/// `partitionLeaderEpoch` (bytes 12..16) if it is above every known epoch.
pub(crate) fn learn_recovered(st: &mut PartitionState, batch: &[u8], base_offset: i64) {
    if let Some(epoch) = be_i32(batch, 12) {
        st.learn_epoch(epoch, base_offset);
    }
}

/// An append committed batches from `base_offset` on, stamped with the
/// partition's leader epoch: learn it if it is above every known epoch. The
/// file is written by the next checkpoint, before it vouches for them.
pub(crate) fn learn_appended(store: &Store, st: &mut PartitionState, base_offset: i64) {
    if st.learn_epoch(st.leader_epoch(), base_offset) {
        store.leader_epochs.mark_dirty();
    }
}

/// Called by the checkpoint before it writes the checkpoint file: write the
/// leader-epoch file if appends taught some partition an epoch since it was
/// last written. A failure poisons the store, as a failed checkpoint does.
pub(crate) fn write_learned(store: &Store) -> Result<(), StorageError> {
    if !store.leader_epochs.dirty.swap(false, Ordering::SeqCst) {
        return Ok(());
    }
    write(store).map_err(|e| {
        store.leader_epochs.mark_dirty();
        store.poison(e.to_string())
    })
}

/// Make `epoch` the partition's leader epoch, assigned at its log end, and
/// durable before returning. An epoch below the current one is refused (a
/// leader epoch never goes back); the current one again changes nothing.
pub(crate) fn set_leader_epoch(
    store: &Store,
    part: &PartitionInner,
    epoch: i32,
) -> Result<(), EpochError> {
    if assign_leader_epoch(part, epoch)? {
        persist(store)?;
    }
    Ok(())
}

/// [`set_leader_epoch`] for several partitions with one write of the file
/// (a leader change moves many partitions at once; one write each would
/// rewrite the whole file per partition). Results come back in order.
pub(crate) fn set_leader_epochs(
    store: &Store,
    items: &[(&PartitionInner, i32)],
) -> Vec<Result<(), EpochError>> {
    let assigned: Vec<Result<bool, EpochError>> = items
        .iter()
        .map(|(part, epoch)| assign_leader_epoch(part, *epoch))
        .collect();
    let written = if assigned.iter().any(|r| matches!(r, Ok(true))) {
        persist(store)
    } else {
        Ok(())
    };
    assigned
        .into_iter()
        .map(|r| match r {
            Ok(true) => written.clone(),
            Ok(false) => Ok(()),
            Err(e) => Err(e),
        })
        .collect()
}

/// Make `epoch` the partition's leader epoch in memory, assigned at its log
/// end. Returns whether anything changed (and the file must be written).
fn assign_leader_epoch(part: &PartitionInner, epoch: i32) -> Result<bool, EpochError> {
    let mut st = lock(&part.state)?;
    if st.removed() {
        return Err(crate::partition::removed_error(part.id).into());
    }
    if epoch < 0 {
        return Err(EpochError::Invalid { epoch });
    }
    if epoch < st.leader_epoch() {
        return Err(EpochError::Stale {
            epoch,
            current: st.leader_epoch(),
        });
    }
    Ok(st.start_epoch(epoch))
}

/// Write the file now; a failure poisons the store.
fn persist(store: &Store) -> Result<(), EpochError> {
    if let Some(reason) = &store.log.durable_tx.borrow().poisoned {
        return Err(StorageError::Poisoned {
            reason: reason.clone(),
        }
        .into());
    }
    write(store).map_err(|e| EpochError::Storage(store.poison(e.to_string())))
}

/// Snapshot every partition's epochs and replace the file with them.
fn write(store: &Store) -> Result<(), StorageError> {
    let _one_writer = lock(&store.leader_epochs.write_lock)?;
    let parts: Vec<Arc<PartitionInner>> = read(&store.registry)?.values().cloned().collect();
    let mut records = Vec::with_capacity(parts.len());
    for p in &parts {
        let st = lock(&p.state)?;
        if st.removed() || (st.epochs().entries.is_empty() && st.leader_epoch() == 0) {
            continue;
        }
        records.push(StoredEpochs {
            id: p.id,
            leader_epoch: st.leader_epoch(),
            cache: st.epochs().clone(),
        });
    }
    records.sort_by_key(|r| r.id);
    replace_file(store, &encode(&records))
}

/// Write `bytes` as the leader-epoch file: temporary file, fdatasync,
/// rename, directory fsync, so a crash leaves the old file or the new one.
fn replace_file(store: &Store, bytes: &[u8]) -> Result<(), StorageError> {
    let dir = &store.leader_epochs.dir;
    let tmp = dir.join(LEADER_EPOCHS_TMP_FILE);
    let io = store.log.io.as_ref();
    durable::replace_file(
        io,
        [
            "storage::leader_epochs_sync",
            "storage::leader_epochs_rename",
            "storage::leader_epochs_dir_sync",
        ],
        &tmp,
        &dir.join(LEADER_EPOCHS_FILE),
        |f| io.write_all_at(f, bytes, 0),
    )
    .map_err(|e| StorageError::from_replace("writing the leader-epoch file", e))
}

#[cfg(test)]
mod tests;
