//! A partition's aborted transactions (Kafka's transaction index), for
//! read_committed fetches: which producers' records in a range of offsets
//! belong to transactions that were aborted, so a consumer drops them.
//!
//! One file per partition, `<dir>/txn-index/<topic-uuid>-<partition>.txn`,
//! created at the partition's first abort: a 64-byte header, then one
//! 40-byte entry per aborted transaction in the order of their markers
//! (layout in `docs/format.md`, "Aborted transactions"). Entries are
//! written when the ABORT marker is appended, without fsync; the checkpoint
//! fsyncs the file (through the shared set of open index files) before it
//! vouches for the marker's offset, and recovery drops the entries it did
//! not vouch for and rebuilds them from the log's tail. Memory holds only
//! the newest few entries; older ones are binary-searched in the file, so
//! memory does not grow with retained data.

use std::collections::VecDeque;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};

use crate::PartitionId;
use crate::error::StorageError;
use crate::format::{be_i64, be_u32};
use crate::io::{FileIo, IndexIo};
use crate::log::io_err;

/// Name of the folder of aborted-transaction files under the data directory.
pub(crate) const TXN_INDEX_DIR: &str = "txn-index";
/// Magic at the start of every aborted-transaction file.
pub(crate) const TXN_INDEX_MAGIC: [u8; 8] = *b"WEIRTXN\0";
/// Version of the aborted-transaction file layout this build writes and reads.
pub(crate) const TXN_INDEX_VERSION: u32 = 1;
/// Bytes of the file header.
const HEADER_BYTES: u64 = 64;
/// Bytes of one entry.
const ENTRY_BYTES: u64 = 40;
/// Entries kept in memory: the newest, which most read_committed fetches
/// (near the tail of the log) need.
const TAIL_MAX: usize = 32;
/// Entries read from the file with one read while collecting.
const READ_CHUNK: u64 = 64;

/// One aborted transaction of a producer in a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbortedTxn {
    /// The producer whose records to drop.
    pub producer_id: i64,
    /// The offset of the transaction's first batch in the partition.
    pub first_offset: i64,
    /// The offset of its ABORT marker.
    pub last_offset: i64,
    /// The partition's last stable offset once the marker was written:
    /// every transaction that began below it had ended by then.
    pub last_stable_offset: i64,
}

impl AbortedTxn {
    fn encode(&self) -> [u8; ENTRY_BYTES as usize] {
        let mut b = [0u8; ENTRY_BYTES as usize];
        b[0..8].copy_from_slice(&self.producer_id.to_be_bytes());
        b[8..16].copy_from_slice(&self.first_offset.to_be_bytes());
        b[16..24].copy_from_slice(&self.last_offset.to_be_bytes());
        b[24..32].copy_from_slice(&self.last_stable_offset.to_be_bytes());
        let crc = crc32c::crc32c(&b[0..32]);
        b[32..36].copy_from_slice(&crc.to_be_bytes());
        b
    }

    /// `None` when the entry fails its checksum (torn or never written).
    fn decode(b: &[u8]) -> Option<Self> {
        let crc = be_u32(b, 32)?;
        if crc32c::crc32c(b.get(0..32)?) != crc {
            return None;
        }
        Some(Self {
            producer_id: be_i64(b, 0)?,
            first_offset: be_i64(b, 8)?,
            last_offset: be_i64(b, 16)?,
            last_stable_offset: be_i64(b, 24)?,
        })
    }
}

/// The header of a partition's aborted-transaction file.
fn header(id: PartitionId) -> [u8; HEADER_BYTES as usize] {
    let mut b = [0u8; HEADER_BYTES as usize];
    b[0..8].copy_from_slice(&TXN_INDEX_MAGIC);
    b[8..12].copy_from_slice(&TXN_INDEX_VERSION.to_be_bytes());
    b[16..32].copy_from_slice(id.topic_id.as_bytes());
    b[32..36].copy_from_slice(&id.partition.to_be_bytes());
    b
}

/// The path of a partition's aborted-transaction file.
pub(crate) fn txn_index_path(dir: &Path, id: PartitionId) -> PathBuf {
    dir.join(TXN_INDEX_DIR)
        .join(format!("{}-{}.txn", id.topic_id.hyphenated(), id.partition))
}

/// A partition's aborted transactions: the file, and its newest entries.
#[derive(Debug)]
pub(crate) struct AbortedIndex {
    path: PathBuf,
    id: PartitionId,
    /// Entries in the file.
    len: u64,
    /// Whether the file exists (it is made at the first abort).
    exists: bool,
    /// The newest entries (also in the file), oldest first.
    tail: VecDeque<AbortedTxn>,
}

impl AbortedIndex {
    /// A partition's index before any abort: no file yet.
    pub fn new(path: PathBuf, id: PartitionId) -> Self {
        Self {
            path,
            id,
            len: 0,
            exists: false,
            tail: VecDeque::new(),
        }
    }

    /// Open a partition's file at recovery, keeping the entries whose
    /// marker lies below `vouched_end` (what the checkpoint vouched for)
    /// and cutting the rest, which the tail scan writes again. A header of
    /// a version this build does not read refuses the open; a header that
    /// is torn or missing is of a file no checkpoint ever synced, and is
    /// written again.
    pub fn load(
        path: PathBuf,
        id: PartitionId,
        vouched_end: i64,
        ix: IndexIo<'_>,
    ) -> Result<Self, StorageError> {
        let mut index = Self::new(path, id);
        let len = match ix.io.metadata(&index.path) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(index),
            Err(e) => return Err(io_err(format!("stat {}", index.path.display()), e)),
        };
        let mut head = [0u8; HEADER_BYTES as usize];
        let whole_header = len >= HEADER_BYTES && ix.read_at(&index.path, &mut head, 0).is_ok();
        if !whole_header || head.iter().all(|b| *b == 0) {
            // Never synced by a checkpoint, so it vouches for nothing.
            index.exists = true;
            ix.files.truncate(ix.io, &index.path, 0)?;
            ix.write_at(&index.path, &header(id), 0)?;
            return Ok(index);
        }
        if head.get(0..8) != Some(&TXN_INDEX_MAGIC[..]) {
            return Err(StorageError::Corrupt {
                file: index.path.display().to_string(),
                detail: "not an aborted-transaction file (bad magic)".into(),
            });
        }
        let version = be_u32(&head, 8).unwrap_or(0);
        if version != TXN_INDEX_VERSION {
            return Err(StorageError::UnsupportedFormat {
                file: index.path.display().to_string(),
                detail: format!(
                    "aborted-transaction file version {version}; this build reads version {TXN_INDEX_VERSION}"
                ),
            });
        }
        if head[8..] != header(id)[8..] {
            return Err(StorageError::Corrupt {
                file: index.path.display().to_string(),
                detail: "the file names another partition".into(),
            });
        }
        index.exists = true;
        index.len = (len - HEADER_BYTES) / ENTRY_BYTES;
        // Entries the checkpoint vouched for come first, whole; after them
        // only entries of markers at or past `vouched_end`, or torn ones.
        let keep = index.partition_point(ix, |e| e.is_some_and(|e| e.last_offset < vouched_end))?;
        for slot in keep..index.len {
            if let Some(e) = index.read_slot(ix, slot)?
                && e.last_offset < vouched_end
            {
                return Err(StorageError::Corrupt {
                    file: index.path.display().to_string(),
                    detail: format!(
                        "entry {slot} (marker at {}) follows an entry that is not vouched for",
                        e.last_offset
                    ),
                });
            }
        }
        index.cut(keep, ix)?;
        Ok(index)
    }

    /// The marker offset of the newest entry.
    pub fn last_marker(&self) -> Option<i64> {
        self.tail.back().map(|e| e.last_offset)
    }

    /// Record an aborted transaction (its marker past every earlier one's).
    /// Returns whether the file was made by this call: its folder must then
    /// be fsync'd before a checkpoint vouches for the entry.
    pub fn append(&mut self, e: AbortedTxn, ix: IndexIo<'_>) -> Result<bool, StorageError> {
        let made = !self.exists;
        if made {
            let mut options = OpenOptions::new();
            options.write(true).create(true).truncate(true);
            ix.io
                .open(&self.path, &options)
                .map_err(|err| io_err(format!("creating {}", self.path.display()), err))?;
            ix.write_at(&self.path, &header(self.id), 0)?;
            self.exists = true;
        }
        ix.write_at(
            &self.path,
            &e.encode(),
            HEADER_BYTES + self.len * ENTRY_BYTES,
        )?;
        self.len += 1;
        self.tail.push_back(e);
        while self.tail.len() > TAIL_MAX {
            self.tail.pop_front();
        }
        Ok(made)
    }

    /// The aborted transactions a read of `[start, upper)` must name:
    /// those whose marker is at or past `start` and that began below
    /// `upper` (Kafka's `collectAbortedTransactions`).
    pub fn collect(
        &self,
        start: i64,
        upper: i64,
        ix: IndexIo<'_>,
    ) -> Result<Vec<AbortedTxn>, StorageError> {
        let mut out = Vec::new();
        let from = match self.tail.front() {
            Some(first) if first.last_offset < start || self.tail.len() as u64 == self.len => {
                self.len - self.tail.len() as u64
            }
            _ => self.partition_point(ix, |e| e.is_some_and(|e| e.last_offset < start))?,
        };
        let tail_from = self.len - self.tail.len() as u64;
        let mut slot = from;
        let mut buf = Vec::new();
        while slot < self.len {
            let chunk: Vec<AbortedTxn> = if slot >= tail_from {
                self.tail
                    .iter()
                    .skip((slot - tail_from) as usize)
                    .copied()
                    .collect()
            } else {
                let n = READ_CHUNK.min(tail_from - slot);
                buf.resize((n * ENTRY_BYTES) as usize, 0);
                ix.read_at(&self.path, &mut buf, HEADER_BYTES + slot * ENTRY_BYTES)?;
                buf.chunks(ENTRY_BYTES as usize)
                    .enumerate()
                    .map(|(i, b)| AbortedTxn::decode(b).ok_or_else(|| self.torn(slot + i as u64)))
                    .collect::<Result<_, _>>()?
            };
            slot += chunk.len() as u64;
            for e in chunk {
                if e.last_offset >= start && e.first_offset < upper {
                    out.push(e);
                }
                if e.last_stable_offset >= upper {
                    return Ok(out);
                }
            }
        }
        Ok(out)
    }

    /// Forget the transactions whose marker is at or past `offset` (a
    /// truncation). No fsync: the file is marked written, and the
    /// truncation's own log entry makes recovery cut it again.
    pub fn truncate(&mut self, offset: i64, ix: IndexIo<'_>) -> Result<(), StorageError> {
        if self.last_marker().is_none_or(|m| m < offset) && self.tail.len() as u64 == self.len {
            return Ok(());
        }
        let keep = self.partition_point(ix, |e| e.is_some_and(|e| e.last_offset < offset))?;
        self.cut(keep, ix)
    }

    /// Forget every entry (the log starts afresh).
    pub fn clear(&mut self, ix: IndexIo<'_>) -> Result<(), StorageError> {
        self.cut(0, ix)
    }

    /// Keep the first `keep` entries; reload the tail from the file.
    fn cut(&mut self, keep: u64, ix: IndexIo<'_>) -> Result<(), StorageError> {
        if self.exists {
            ix.files
                .truncate(ix.io, &self.path, HEADER_BYTES + keep * ENTRY_BYTES)?;
        }
        self.len = keep;
        self.tail.clear();
        let from = keep.saturating_sub(TAIL_MAX as u64);
        for slot in from..keep {
            let e = self.read_slot(ix, slot)?.ok_or_else(|| self.torn(slot))?;
            self.tail.push_back(e);
        }
        Ok(())
    }

    /// Remove the file (the partition is gone).
    pub fn remove(&mut self, ix: IndexIo<'_>) -> Result<(), StorageError> {
        ix.files.forget(&self.path)?;
        match ix.io.remove_file(&self.path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(format!("removing {}", self.path.display()), e)),
        }
        self.exists = false;
        self.len = 0;
        self.tail.clear();
        Ok(())
    }

    fn read_slot(&self, ix: IndexIo<'_>, slot: u64) -> Result<Option<AbortedTxn>, StorageError> {
        let mut b = [0u8; ENTRY_BYTES as usize];
        ix.read_at(&self.path, &mut b, HEADER_BYTES + slot * ENTRY_BYTES)?;
        Ok(AbortedTxn::decode(&b))
    }

    /// The first slot whose entry does not satisfy `before` (which holds
    /// for a prefix of the file).
    fn partition_point(
        &self,
        ix: IndexIo<'_>,
        before: impl Fn(Option<AbortedTxn>) -> bool,
    ) -> Result<u64, StorageError> {
        let (mut lo, mut hi) = (0u64, self.len);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if before(self.read_slot(ix, mid)?) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        Ok(lo)
    }

    fn torn(&self, slot: u64) -> StorageError {
        StorageError::Corrupt {
            file: self.path.display().to_string(),
            detail: format!("aborted-transaction entry {slot} fails its checksum"),
        }
    }
}

/// Refuse a data directory holding an aborted-transaction file of a version
/// this build does not read, before recovery changes anything.
pub(crate) fn check_versions(dir: &Path, io: &dyn FileIo) -> Result<(), StorageError> {
    crate::io::refuse_other_versions(
        &dir.join(TXN_INDEX_DIR),
        "txn",
        TXN_INDEX_MAGIC,
        TXN_INDEX_VERSION,
        "aborted-transaction file",
        io,
    )
}

/// Remove the aborted-transaction files of partitions that no longer exist
/// (removed before a crash made the removal durable).
pub(crate) fn remove_orphans(
    dir: &Path,
    live: &dyn Fn(&str) -> bool,
    io: &dyn FileIo,
) -> Result<(), StorageError> {
    let folder = dir.join(TXN_INDEX_DIR);
    let entries = io
        .read_dir(&folder)
        .map_err(|e| io_err(format!("listing {}", folder.display()), e))?;
    for path in entries {
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let keep = name.strip_suffix(".txn").is_some_and(live);
        if !keep {
            io.remove_file(&path)
                .map_err(|e| io_err(format!("removing {}", path.display()), e))?;
        }
    }
    Ok(())
}
