//! Producer-state snapshot files: a partition's producer table (epochs,
//! recent sequences, open transactions) as of an offset, so that an open
//! rebuilds it by replaying only the batches after that offset instead of
//! the whole retained log, and keeps producers whose batches retention or
//! DeleteRecords removed (as Kafka's producer snapshots do).
//!
//! `<dir>/producer-state/<topic-uuid>-<partition>-<20-digit offset>.snap`,
//! written by the checkpoint (`store.rs`) through a temporary file,
//! fdatasync and rename, the folder fsync'd once per checkpoint. A snapshot
//! is taken at the partition's log end, which may be past what is durable;
//! it is trusted only once a checkpoint vouches for its offset, so the open
//! uses the newest snapshot at or below the checkpoint's index end offset
//! and removes every later one. The layout is in `docs/format.md`.

use std::collections::{BTreeSet, HashMap};
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};

use crate::PartitionId;
use crate::error::StorageError;
use crate::io::{FileIo, durable};
use crate::log::io_err;
use crate::producer::{ProducerTable, SnapshotError};

/// Name of the folder of snapshot files under the data directory.
pub(crate) const SNAPSHOT_DIR: &str = "producer-state";

/// The name of a partition's snapshot at `offset`, without its folder.
fn name(id: PartitionId, offset: i64) -> String {
    format!(
        "{}-{}-{offset:020}.snap",
        id.topic_id.hyphenated(),
        id.partition
    )
}

/// The path of a partition's snapshot at `offset`.
pub(crate) fn path(dir: &Path, id: PartitionId, offset: i64) -> PathBuf {
    dir.join(SNAPSHOT_DIR).join(name(id, offset))
}

/// The partition and offset a snapshot file's name says.
fn parse_name(name: &str) -> Option<(PartitionId, i64)> {
    let stem = name.strip_suffix(".snap")?;
    let (rest, offset) = stem.rsplit_once('-')?;
    let (uuid, partition) = rest.rsplit_once('-')?;
    Some((
        PartitionId {
            topic_id: uuid::Uuid::parse_str(uuid).ok()?,
            partition: partition.parse().ok()?,
        },
        offset.parse().ok()?,
    ))
}

/// Every snapshot on disk, by partition. Temporary files a crash left are
/// removed.
pub(crate) fn list(
    dir: &Path,
    io: &dyn FileIo,
) -> Result<HashMap<PartitionId, BTreeSet<i64>>, StorageError> {
    let folder = dir.join(SNAPSHOT_DIR);
    let entries = io
        .read_dir(&folder)
        .map_err(|e| io_err(format!("listing {}", folder.display()), e))?;
    let mut out: HashMap<PartitionId, BTreeSet<i64>> = HashMap::new();
    for path in entries {
        let Some(file) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if file.ends_with(".tmp") {
            remove(io, &path)?;
        } else if let Some((id, offset)) = parse_name(file) {
            out.entry(id).or_default().insert(offset);
        }
    }
    Ok(out)
}

/// Refuse a data directory holding a snapshot of a version this build does
/// not read, before recovery changes anything.
pub(crate) fn check_versions(dir: &Path, io: &dyn FileIo) -> Result<(), StorageError> {
    crate::io::refuse_other_versions(
        &dir.join(SNAPSHOT_DIR),
        "snap",
        crate::producer::SNAPSHOT_MAGIC,
        crate::producer::SNAPSHOT_VERSION,
        "producer-state snapshot",
        io,
    )
}

/// Read a partition's snapshot at `offset`. A version this build does not
/// read refuses the open; a damaged file (which only a failing disk makes:
/// snapshots are renamed into place once synced) is reported and skipped,
/// `None`, and the caller falls back on an older one or the log.
pub(crate) fn read(
    dir: &Path,
    id: PartitionId,
    offset: i64,
    io: &dyn FileIo,
) -> Result<Option<ProducerTable>, StorageError> {
    let file = path(dir, id, offset);
    let bytes = io
        .read(&file)
        .map_err(|e| io_err(format!("reading {}", file.display()), e))?;
    match ProducerTable::decode(&bytes, id) {
        Ok((table, at)) if at == offset => Ok(Some(table)),
        Ok((_, at)) => {
            tracing::warn!(file = %file.display(), covers = at, "a producer-state snapshot's name and content disagree; skipping it");
            Ok(None)
        }
        Err(SnapshotError::Unsupported(version)) => Err(StorageError::UnsupportedFormat {
            file: file.display().to_string(),
            detail: format!(
                "producer-state snapshot version {version}; this build reads version {}",
                crate::producer::SNAPSHOT_VERSION
            ),
        }),
        Err(SnapshotError::Corrupt(detail)) => {
            tracing::warn!(file = %file.display(), %detail, "a producer-state snapshot is damaged; skipping it and rebuilding producer state from the log");
            Ok(None)
        }
    }
}

/// Write snapshots, each `(partition, offset, bytes)`: every one through a
/// temporary file, fdatasync'd and renamed into place, then the folder
/// fsync'd once for all.
pub(crate) fn write_many(
    dir: &Path,
    items: &[(PartitionId, i64, Vec<u8>)],
    io: &dyn FileIo,
) -> Result<(), StorageError> {
    if items.is_empty() {
        return Ok(());
    }
    for (id, offset, bytes) in items {
        let to = path(dir, *id, *offset);
        let tmp = to.with_extension("snap.tmp");
        let mut options = OpenOptions::new();
        options.write(true).create(true).truncate(true);
        let file = io
            .open(&tmp, &options)
            .map_err(|e| io_err(format!("creating {}", tmp.display()), e))?;
        io.write_all_at(&file, bytes, 0)
            .map_err(|e| io_err(format!("writing {}", tmp.display()), e))?;
        durable::sync_data(io, "storage::snapshot_sync", &file)
            .map_err(|e| io_err(format!("fdatasync of {}", tmp.display()), e))?;
        durable::rename(io, "storage::snapshot_rename", &tmp, &to)
            .map_err(|e| io_err(format!("renaming {}", tmp.display()), e))?;
    }
    sync_folder(dir, io)
}

/// fsync the snapshot folder, so the files made or removed in it stay so.
pub(crate) fn sync_folder(dir: &Path, io: &dyn FileIo) -> Result<(), StorageError> {
    let folder = dir.join(SNAPSHOT_DIR);
    durable::sync_dir(io, "storage::snapshot_dir_sync", &folder)
        .map_err(|e| io_err(format!("fsync of {}", folder.display()), e))
}

/// Remove one snapshot file (gone already is fine).
pub(crate) fn remove(io: &dyn FileIo, file: &Path) -> Result<(), StorageError> {
    match io.remove_file(file) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(format!("removing {}", file.display()), e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_name_reads_back_as_its_partition_and_offset() {
        let id = PartitionId {
            topic_id: uuid::Uuid::from_u128(0xabc),
            partition: 12,
        };
        let n = name(id, 4096);
        assert!(n.ends_with("-12-00000000000000004096.snap"), "{n}");
        assert_eq!(parse_name(&n), Some((id, 4096)));
        assert_eq!(parse_name("nonsense.snap"), None);
        assert_eq!(parse_name(&format!("{n}.tmp")), None);
    }
}
