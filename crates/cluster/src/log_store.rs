//! The Raft log on disk, for openraft's `RaftLogStorage`.
//!
//! `<data dir>/raft/log` is a record file (`weir_metadata::record_file`,
//! magic `WEIRRLOG`, drawn in docs/format.md): each record is one Raft log
//! entry as JSON, its sequence number the entry's index. An append writes
//! the entries' frames and fdatasyncs before openraft is told they are
//! durable. A truncation (a new leader overwrote an uncommitted tail) cuts
//! the file at the first removed entry's frame and syncs. A purge (a
//! snapshot covers the prefix) rewrites the file without the prefix, with a
//! first record naming the last purged entry (sequence number 0), through a
//! temporary file and a rename.
//!
//! `<data dir>/raft/vote` holds the vote (term and whom this node voted
//! for) and is replaced atomically whenever it changes: a node must never
//! vote twice in one term, even across a crash.
//!
//! The entries not yet purged stay in memory too: openraft snapshots the
//! metadata every few thousand entries and then purges, which bounds them.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{Entry, LogId, OptionalSend, RaftLogId, RaftLogReader, StorageError, Vote};
use weir_metadata::record_file::RecordFileFormat;

use crate::{ClusterError, TypeConfig, storage_io};

/// The Raft log's file format.
pub(crate) const LOG_FORMAT: RecordFileFormat = RecordFileFormat {
    magic: b"WEIRRLOG",
    version: 1,
    record_bytes_max: crate::ENTRY_BYTES_MAX,
    file_bytes_max: 1 << 30,
    what: "Raft log",
};
/// The log file's name in the Raft folder.
const LOG_FILE: &str = "log";
/// Where a purged log is written before it replaces the log.
const LOG_TEMP_FILE: &str = "log.tmp";
/// The vote file's name.
const VOTE_FILE: &str = "vote";
/// Where a new vote is written before it replaces the old one.
const VOTE_TEMP_FILE: &str = "vote.tmp";
/// The vote file's format version.
const VOTE_FORMAT_VERSION: u32 = 1;
/// Largest vote file read.
const VOTE_BYTES_MAX: u64 = 64 << 10;

/// One record of the log file.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
enum LogRecord {
    /// First in a purged file: entries up to this one are gone.
    Purged(LogId<u64>),
    /// A Raft log entry.
    Entry(Entry<TypeConfig>),
}

/// The vote file's content.
#[derive(serde::Serialize, serde::Deserialize)]
struct VoteFile {
    format_version: u32,
    vote: Vote<u64>,
}

/// The log: its file, and its entries in memory.
struct LogFile {
    dir: PathBuf,
    file: File,
    /// Each entry, with where its frame starts in the file.
    entries: BTreeMap<u64, (Entry<TypeConfig>, u64)>,
    /// The file's length.
    len: u64,
    last_purged: Option<LogId<u64>>,
    vote: Option<Vote<u64>>,
    /// Set by a failed write: the file's state is unknown, so nothing more
    /// is written (openraft stops the node on the error).
    failed: Option<String>,
}

/// openraft's handle on the log; clones share it.
#[derive(Clone)]
pub(crate) struct LogStore {
    inner: Arc<Mutex<LogFile>>,
}

impl LogStore {
    /// Open (or create) the log in `dir`.
    pub(crate) fn open(dir: &Path) -> Result<Self, ClusterError> {
        let storage = |e: String| ClusterError::Storage(e);
        std::fs::create_dir_all(dir)
            .and_then(|()| weir_sync::sync_dir(dir))
            .map_err(|e| storage(format!("cannot create {}: {e}", dir.display())))?;
        let path = dir.join(LOG_FILE);
        // A purge that was not renamed into place never replaced anything.
        let _ = std::fs::remove_file(dir.join(LOG_TEMP_FILE));
        if !path.exists() {
            write_log(dir, None, std::iter::empty())?;
        }
        let (frames, len) = LOG_FORMAT.read(&path).map_err(|e| storage(e.to_string()))?;
        let mut entries = BTreeMap::new();
        let mut last_purged = None;
        for frame in frames {
            let corrupt = |why: String| {
                storage(format!(
                    "corrupt Raft log {} at byte {}: {why}",
                    path.display(),
                    frame.offset
                ))
            };
            let record: LogRecord = serde_json::from_slice(&frame.payload).map_err(|e| {
                corrupt(format!(
                    "an entry this Weir cannot read (written by a newer one?): {e}"
                ))
            })?;
            match record {
                LogRecord::Purged(id) if entries.is_empty() && last_purged.is_none() => {
                    last_purged = Some(id);
                }
                LogRecord::Purged(_) => return Err(corrupt("a purge mark after entries".into())),
                LogRecord::Entry(entry) => {
                    let index = entry.get_log_id().index;
                    let expected = entries
                        .keys()
                        .next_back()
                        .map(|i| i + 1)
                        .or(last_purged.map(|p: LogId<u64>| p.index + 1));
                    if index != frame.seq || expected.is_some_and(|e| e != index) {
                        return Err(corrupt(format!(
                            "entry {index} where entry {expected:?} belongs"
                        )));
                    }
                    entries.insert(index, (entry, frame.offset));
                }
            }
        }
        let file = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(|e| storage(format!("cannot open {}: {e}", path.display())))?;
        Ok(Self {
            inner: Arc::new(Mutex::new(LogFile {
                dir: dir.to_path_buf(),
                file,
                entries,
                len,
                last_purged,
                vote: read_vote(dir)?,
                failed: None,
            })),
        })
    }

    /// Run `f` on the log on a blocking thread: it writes and syncs files.
    async fn with_file<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut LogFile) -> Result<T, String> + Send + 'static,
    ) -> Result<T, StorageError<u64>> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let mut log = weir_sync::lock(&inner).map_err(|e| e.to_string())?;
            if let Some(why) = &log.failed {
                return Err(format!("the Raft log failed earlier: {why}"));
            }
            let out = f(&mut log);
            if let Err(why) = &out {
                log.failed = Some(why.clone());
            }
            out
        })
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r)
        .map_err(storage_io)
    }

    // openraft's error type, which every trait method returns anyway.
    #[allow(clippy::result_large_err)]
    fn read<T>(&self, f: impl FnOnce(&LogFile) -> T) -> Result<T, StorageError<u64>> {
        let log = weir_sync::lock(&self.inner).map_err(|e| storage_io(e.to_string()))?;
        Ok(f(&log))
    }
}

impl LogFile {
    fn append(&mut self, entries: Vec<Entry<TypeConfig>>) -> Result<(), String> {
        let mut bytes = Vec::new();
        let mut placed = Vec::with_capacity(entries.len());
        for entry in entries {
            let index = entry.get_log_id().index;
            let payload =
                serde_json::to_vec(&LogRecord::Entry(entry.clone())).map_err(|e| e.to_string())?;
            let offset = self.len + bytes.len() as u64;
            bytes.extend_from_slice(&LOG_FORMAT.encode(index, &payload)?);
            placed.push((index, (entry, offset)));
        }
        let path = self.dir.join(LOG_FILE);
        self.file
            .write_all(&bytes)
            .and_then(|()| self.file.sync_data())
            .map_err(|e| format!("cannot append to {}: {e}", path.display()))?;
        self.len += bytes.len() as u64;
        self.entries.extend(placed);
        Ok(())
    }

    fn truncate(&mut self, from: u64) -> Result<(), String> {
        let Some(offset) = self.entries.get(&from).map(|(_, offset)| *offset) else {
            return Ok(());
        };
        let path = self.dir.join(LOG_FILE);
        self.file
            .set_len(offset)
            .and_then(|()| self.file.sync_data())
            .map_err(|e| format!("cannot truncate {}: {e}", path.display()))?;
        self.len = offset;
        self.entries.split_off(&from);
        Ok(())
    }

    fn purge(&mut self, upto: LogId<u64>) -> Result<(), String> {
        let kept: Vec<Entry<TypeConfig>> = self
            .entries
            .range(upto.index + 1..)
            .map(|(_, (e, _))| e.clone())
            .collect();
        let placed =
            write_log(&self.dir, Some(upto), kept.into_iter()).map_err(|e| e.to_string())?;
        let path = self.dir.join(LOG_FILE);
        self.file = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        self.len = placed.0;
        self.entries = placed.1;
        self.last_purged = Some(upto);
        Ok(())
    }
}

/// Replace the log file with one holding `purged` (if any) and `entries`;
/// returns its length and where each entry now is.
#[allow(clippy::type_complexity)]
fn write_log(
    dir: &Path,
    purged: Option<LogId<u64>>,
    entries: impl Iterator<Item = Entry<TypeConfig>>,
) -> Result<(u64, BTreeMap<u64, (Entry<TypeConfig>, u64)>), ClusterError> {
    let fail = |e: String| ClusterError::Storage(format!("cannot write the Raft log: {e}"));
    let mut bytes = LOG_FORMAT.header().to_vec();
    if let Some(id) = purged {
        let payload =
            serde_json::to_vec(&LogRecord::Purged(id)).map_err(|e| fail(e.to_string()))?;
        bytes.extend_from_slice(&LOG_FORMAT.encode(0, &payload).map_err(fail)?);
    }
    let mut placed = BTreeMap::new();
    for entry in entries {
        let index = entry.get_log_id().index;
        let payload = serde_json::to_vec(&LogRecord::Entry(entry.clone()))
            .map_err(|e| fail(e.to_string()))?;
        let offset = bytes.len() as u64;
        bytes.extend_from_slice(&LOG_FORMAT.encode(index, &payload).map_err(fail)?);
        placed.insert(index, (entry, offset));
    }
    weir_sync::replace_file(
        &dir.join(LOG_TEMP_FILE),
        &dir.join(LOG_FILE),
        |mut f| f.write_all(&bytes),
        File::sync_data,
    )
    .map_err(|e| fail(e.to_string()))?;
    Ok((bytes.len() as u64, placed))
}

fn read_vote(dir: &Path) -> Result<Option<Vote<u64>>, ClusterError> {
    let path = dir.join(VOTE_FILE);
    let _ = std::fs::remove_file(dir.join(VOTE_TEMP_FILE));
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(ClusterError::Storage(format!(
                "cannot read {}: {e}",
                path.display()
            )));
        }
    };
    let corrupt = |why: String| {
        ClusterError::Storage(format!("corrupt Raft vote file {}: {why}", path.display()))
    };
    if bytes.len() as u64 > VOTE_BYTES_MAX {
        return Err(corrupt(format!("larger than {VOTE_BYTES_MAX} bytes")));
    }
    #[derive(serde::Deserialize)]
    struct Version {
        format_version: u32,
    }
    let version: Version = serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
    if version.format_version != VOTE_FORMAT_VERSION {
        return Err(corrupt(format!(
            "format_version {} is not one this Weir reads ({VOTE_FORMAT_VERSION})",
            version.format_version
        )));
    }
    let file: VoteFile = serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
    Ok(Some(file.vote))
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<u64>> {
        self.read(|log| {
            log.entries
                .range(range)
                .map(|(_, (e, _))| e.clone())
                .collect()
        })
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<u64>> {
        self.read(|log| {
            let last = log
                .entries
                .values()
                .next_back()
                .map(|(e, _)| *e.get_log_id())
                .or(log.last_purged);
            LogState {
                last_purged_log_id: log.last_purged,
                last_log_id: last,
            }
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), StorageError<u64>> {
        let vote = *vote;
        self.with_file(move |log| {
            let bytes = serde_json::to_vec(&VoteFile {
                format_version: VOTE_FORMAT_VERSION,
                vote,
            })
            .map_err(|e| e.to_string())?;
            weir_sync::replace_file(
                &log.dir.join(VOTE_TEMP_FILE),
                &log.dir.join(VOTE_FILE),
                |mut f| f.write_all(&bytes),
                File::sync_data,
            )
            .map_err(|e| e.to_string())?;
            log.vote = Some(vote);
            Ok(())
        })
        .await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, StorageError<u64>> {
        self.read(|log| log.vote)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<u64>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<_> = entries.into_iter().collect();
        let result = self.with_file(move |log| log.append(entries)).await;
        match &result {
            Ok(()) => callback.log_io_completed(Ok(())),
            Err(e) => callback.log_io_completed(Err(io::Error::other(e.to_string()))),
        }
        result
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        self.with_file(move |log| log.truncate(log_id.index)).await
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        self.with_file(move |log| log.purge(log_id)).await
    }
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, EntryPayload};

    use super::*;

    fn entry(index: u64) -> Entry<TypeConfig> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Blank,
        }
    }

    fn indexes(store: &LogStore) -> Vec<u64> {
        store
            .read(|log| log.entries.keys().copied().collect())
            .unwrap_or_default()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn appends_truncations_purges_and_votes_survive_reopen()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let store = LogStore::open(dir.path())?;
        store
            .with_file(|log| log.append((1..=10).map(entry).collect()))
            .await?;
        store.with_file(|log| log.truncate(8)).await?;
        store
            .with_file(|log| log.purge(LogId::new(CommittedLeaderId::new(1, 1), 3)))
            .await?;
        store.with_file(|log| log.append(vec![entry(8)])).await?;
        let mut writer = store.clone();
        writer.save_vote(&Vote::new(4, 2)).await?;
        drop((store, writer));

        let mut reopened = LogStore::open(dir.path())?;
        assert_eq!(indexes(&reopened), vec![4, 5, 6, 7, 8]);
        let state = reopened.get_log_state().await?;
        assert_eq!(state.last_purged_log_id.map(|l| l.index), Some(3));
        assert_eq!(state.last_log_id.map(|l| l.index), Some(8));
        assert_eq!(reopened.read_vote().await?, Some(Vote::new(4, 2)));
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_torn_last_entry_is_cut_and_an_unknown_version_refuses_to_open()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let store = LogStore::open(dir.path())?;
        store
            .with_file(|log| log.append((1..=3).map(entry).collect()))
            .await?;
        drop(store);
        let path = dir.path().join(LOG_FILE);
        let len = std::fs::metadata(&path)?.len();
        OpenOptions::new()
            .write(true)
            .open(&path)?
            .set_len(len - 5)?;
        assert_eq!(indexes(&LogStore::open(dir.path())?), vec![1, 2]);

        let mut bytes = std::fs::read(&path)?;
        bytes[11] = 9;
        std::fs::write(&path, &bytes)?;
        let Err(err) = LogStore::open(dir.path()) else {
            panic!("a log of version 9 opened");
        };
        assert!(err.to_string().contains("format version"), "{err}");
        Ok(())
    }
}
