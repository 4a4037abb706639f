//! Every file operation of the storage engine (opens, reads, writes,
//! truncations, fdatasyncs, renames, removals, folder creation, listing and
//! fsync), behind a trait so tests can inject failures or simulate a crash
//! that loses what was never synced; the named failpoints in front of each
//! durable step; and the bounded set of open index files.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, Metadata, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::error::StorageError;
use crate::log::{io_err, lock};

/// The file operations of commit-log, index, checkpoint and leader-epoch
/// files and their folders. Every default calls the operating system; a
/// test overrides what it needs. The durable steps (fdatasync, folder fsync,
/// rename) are called through [`durable`]'s wrappers, which put the step's
/// failpoint in front, so an override never skips one.
pub(crate) trait FileIo: Send + Sync + 'static {
    /// Open (or create, as `options` say) the file at `path`.
    fn open(&self, path: &Path, options: &OpenOptions) -> io::Result<File> {
        options.open(path)
    }

    /// Read exactly `buf.len()` bytes at `offset`.
    fn read_exact_at(&self, file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
        file.read_exact_at(buf, offset)
    }

    /// Write all of `buf` at `offset`.
    fn write_all_at(&self, file: &File, buf: &[u8], offset: u64) -> io::Result<()> {
        file.write_all_at(buf, offset)
    }

    /// The length of an open file.
    fn len(&self, file: &File) -> io::Result<u64> {
        file.metadata().map(|m| m.len())
    }

    /// Cut (or extend) a file to `len` bytes.
    fn set_len(&self, file: &File, len: u64) -> io::Result<()> {
        file.set_len(len)
    }

    /// fdatasync. Call it through [`durable::sync_data`].
    fn sync_data(&self, file: &File) -> io::Result<()> {
        file.sync_data()
    }

    /// Rename `from` over `to`. Call it through [`durable::rename`].
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    /// fsync a folder, so the creations, renames and removals in it are
    /// durable. Call it through [`durable::sync_dir`].
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        weir_sync::sync_dir(dir)
    }

    /// Remove the file at `path`.
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    /// Create a folder and its missing parents.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)
    }

    /// The paths of the entries of a folder.
    fn read_dir(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        std::fs::read_dir(dir)?
            .map(|ent| ent.map(|e| e.path()))
            .collect()
    }

    /// The metadata of the file at `path` (`NotFound` when there is none).
    fn metadata(&self, path: &Path) -> io::Result<Metadata> {
        std::fs::metadata(path)
    }

    /// The whole content of the file at `path`.
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        std::fs::read(path)
    }

    /// Whether the named failpoints act on this I/O. They are
    /// process-global: in this crate's unit tests only the I/O of the crash
    /// tests (which hold `fail::FailScenario`) opts in, so the tests running
    /// beside them never meet a failpoint set for another test.
    fn failpoints(&self) -> bool {
        !cfg!(test)
    }
}

/// Refuse a folder holding a file (named `*.{extension}`) that starts with
/// `magic` and names a version other than `version`: a newer Weir wrote
/// it. Read-only, for recovery's checks before it changes anything. A
/// missing folder, and files too short or of another magic, pass (their
/// own loader judges them).
pub(crate) fn refuse_other_versions(
    folder: &Path,
    extension: &str,
    magic: [u8; 8],
    version: u32,
    what: &str,
    io: &dyn FileIo,
) -> Result<(), StorageError> {
    let entries = match io.read_dir(folder) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err(format!("listing {}", folder.display()), e)),
    };
    for path in entries {
        if path.extension().and_then(|e| e.to_str()) != Some(extension) {
            continue;
        }
        let file = io
            .open(&path, OpenOptions::new().read(true))
            .map_err(|e| io_err(format!("opening {}", path.display()), e))?;
        let mut head = [0u8; 12];
        if io.read_exact_at(&file, &mut head, 0).is_err() || head[..8] != magic {
            continue;
        }
        let found = crate::format::be_u32(&head, 8).unwrap_or(0);
        if found != version {
            return Err(StorageError::UnsupportedFormat {
                file: path.display().to_string(),
                detail: format!("{what} version {found}; this build reads version {version}"),
            });
        }
    }
    Ok(())
}

/// [`failpoint`] for an operation through `io`: nothing when `io` opts out.
pub(crate) fn failpoint_for(io: &dyn FileIo, name: &'static str) -> io::Result<()> {
    if io.failpoints() {
        failpoint(name)?;
    }
    Ok(())
}

/// The durable steps, each behind its named failpoint (`storage::<what>`,
/// listed in docs/testing.md), then the [`FileIo`] call.
pub(crate) mod durable {
    use std::fs::File;
    use std::io;
    use std::path::Path;

    use super::{FileIo, failpoint_for};

    /// fdatasync `file`, the durable step `step`.
    pub fn sync_data(io: &dyn FileIo, step: &'static str, file: &File) -> io::Result<()> {
        failpoint_for(io, step)?;
        io.sync_data(file)
    }

    /// Rename `from` over `to`, the durable step `step`.
    pub fn rename(io: &dyn FileIo, step: &'static str, from: &Path, to: &Path) -> io::Result<()> {
        failpoint_for(io, step)?;
        io.rename(from, to)
    }

    /// fsync the folder `dir`, the durable step `step`.
    pub fn sync_dir(io: &dyn FileIo, step: &'static str, dir: &Path) -> io::Result<()> {
        failpoint_for(io, step)?;
        io.sync_dir(dir)
    }

    /// [`weir_sync::replace_file`] through `io`, with the failpoints of its
    /// three durable steps: the temporary file's fdatasync, the rename, and
    /// the folder's fsync.
    pub fn replace_file(
        io: &dyn FileIo,
        steps: [&'static str; 3],
        tmp: &Path,
        path: &Path,
        write: impl FnOnce(&File) -> io::Result<()>,
    ) -> Result<(), weir_sync::ReplaceError> {
        weir_sync::replace_file_with(&Replace { io, steps }, tmp, path, write)
    }

    /// [`FileIo`] as the replace helper's operations.
    struct Replace<'a> {
        io: &'a dyn FileIo,
        /// Failpoints of the fdatasync, the rename and the folder fsync.
        steps: [&'static str; 3],
    }

    impl weir_sync::ReplaceIo for Replace<'_> {
        fn create(&self, tmp: &Path) -> io::Result<File> {
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create(true).truncate(true);
            self.io.open(tmp, &options)
        }
        fn sync(&self, file: &File) -> io::Result<()> {
            sync_data(self.io, self.steps[0], file)
        }
        fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
            rename(self.io, self.steps[1], from, to)
        }
        fn sync_dir(&self, dir: &Path) -> io::Result<()> {
            sync_dir(self.io, self.steps[2], dir)
        }
    }
}

/// What a partition's queue index needs to reach its file: the shared set
/// of open index files and the file operations to write through.
#[derive(Clone, Copy)]
pub(crate) struct IndexIo<'a> {
    pub files: &'a IndexFiles,
    pub io: &'a dyn FileIo,
}

impl IndexIo<'_> {
    /// Write `buf` at `offset` of the index file at `path` (no fsync).
    pub fn write_at(&self, path: &Path, buf: &[u8], offset: u64) -> Result<(), StorageError> {
        self.files.write_at(self.io, path, buf, offset)
    }

    /// Read exactly `buf.len()` bytes at `offset` of the index file at `path`.
    pub fn read_at(&self, path: &Path, buf: &mut [u8], offset: u64) -> Result<(), StorageError> {
        self.files.read_at(self.io, path, buf, offset)
    }
}

/// A named failpoint in front of a file operation, `storage::<what>` (the
/// list is in docs/testing.md). Built with the `failpoints` feature, a test
/// can make it sleep (`sleep(3000)`), or fail it with an I/O error
/// (`return`), which the caller handles like the operation's own failure.
/// Without the feature it is nothing.
#[cfg_attr(not(feature = "failpoints"), allow(unused_variables))]
fn failpoint(name: &'static str) -> io::Result<()> {
    fail::fail_point!(name, |message: Option<String>| Err(io::Error::other(
        format!(
            "failpoint {name}: {}",
            message.as_deref().unwrap_or("injected failure")
        )
    )));
    Ok(())
}

/// The operating system's file calls.
#[derive(Debug, Default)]
pub(crate) struct OsIo;

impl FileIo for OsIo {}

/// The index files held open: at most `open_max`, the least recently used
/// closed first, so a broker with many partitions does not hold a
/// descriptor per partition.
///
/// A file is closed only once its writes are fdatasync'd. After a close, a
/// failed writeback of its pages could be reported on no descriptor, and a
/// checkpoint would then vouch for index entries that never reached the
/// disk. Writes and the fsync of an evicted file happen under the set's
/// lock, so no write can land on a file between its fsync and its close.
/// The cost: when more partitions are written between two checkpoints than
/// `open_max`, an index write (under its partition's lock) may wait for one
/// index fsync; keep `open_max` above the number of busy partitions.
pub(crate) struct IndexFiles {
    open_max: usize,
    set: Mutex<OpenSet>,
}

#[derive(Default)]
struct OpenSet {
    files: HashMap<PathBuf, OpenIndex>,
    /// Use stamp to partition, oldest first.
    by_use: BTreeMap<u64, PathBuf>,
    next_stamp: u64,
}

struct OpenIndex {
    file: Arc<File>,
    path: PathBuf,
    stamp: u64,
    /// Written since its last fdatasync.
    dirty: bool,
}

impl IndexFiles {
    /// An empty set that keeps at most `open_max` files open (at least one).
    pub fn new(open_max: usize) -> Self {
        Self {
            open_max: open_max.max(1),
            set: Mutex::new(OpenSet::default()),
        }
    }

    /// Write `buf` at `offset` of a partition's index file (no fsync),
    /// opening it first if needed.
    pub fn write_at(
        &self,
        io: &dyn FileIo,
        path: &Path,
        buf: &[u8],
        offset: u64,
    ) -> Result<(), StorageError> {
        let mut set = lock(&self.set)?;
        let file = set.open(self.open_max, io, path)?;
        io.write_all_at(&file, buf, offset)
            .map_err(|e| io_err(format!("write to {}", path.display()), e))?;
        if let Some(f) = set.files.get_mut(path) {
            f.dirty = true;
        }
        Ok(())
    }

    /// Read exactly `buf.len()` bytes at `offset` of a partition's index
    /// file, opening it first if needed. The read runs outside the set's
    /// lock (the open file is shared, so an eviction cannot close it under us).
    pub fn read_at(
        &self,
        io: &dyn FileIo,
        path: &Path,
        buf: &mut [u8],
        offset: u64,
    ) -> Result<(), StorageError> {
        let file = {
            let mut set = lock(&self.set)?;
            set.open(self.open_max, io, path)?
        };
        io.read_exact_at(&file, buf, offset)
            .map_err(|e| io_err(format!("reading {}", path.display()), e))
    }

    /// fdatasync every open file written since its last sync. A file the
    /// set closed was synced when it was closed.
    pub fn sync_dirty(&self, io: &dyn FileIo) -> Result<(), StorageError> {
        let dirty: Vec<(Arc<File>, PathBuf)> = {
            let mut set = lock(&self.set)?;
            set.files
                .values_mut()
                .filter_map(|f| {
                    std::mem::take(&mut f.dirty).then(|| (f.file.clone(), f.path.clone()))
                })
                .collect()
        };
        // Outside the lock: a write after the flag was cleared marks the
        // file dirty again, for the next sync or the close.
        for (file, path) in dirty {
            durable::sync_data(io, "storage::index_sync", &file)
                .map_err(|e| io_err(format!("fdatasync of {}", path.display()), e))?;
        }
        Ok(())
    }

    /// Cut a partition's index file to at most `len` bytes (no fsync: the
    /// file is marked written, so the next checkpoint, or its close, syncs
    /// it). A shorter file is left as it is: entries only memory holds were
    /// never written, and growing the file would put zeroed entries there.
    pub fn truncate(&self, io: &dyn FileIo, path: &Path, len: u64) -> Result<(), StorageError> {
        let mut set = lock(&self.set)?;
        let file = set.open(self.open_max, io, path)?;
        let cut = |e| io_err(format!("truncating {}", path.display()), e);
        if io.len(&file).map_err(cut)? <= len {
            return Ok(());
        }
        io.set_len(&file, len).map_err(cut)?;
        if let Some(f) = set.files.get_mut(path) {
            f.dirty = true;
        }
        Ok(())
    }

    /// Close a partition's file without syncing it: it was replaced by a
    /// synced copy (compaction) or deleted with its partition.
    pub fn forget(&self, path: &Path) -> Result<(), StorageError> {
        let mut set = lock(&self.set)?;
        if let Some(f) = set.files.remove(path) {
            set.by_use.remove(&f.stamp);
        }
        Ok(())
    }

    /// How many index files are open (for tests and logs).
    #[cfg(test)]
    pub fn open_count(&self) -> usize {
        self.set.lock().map_or(0, |s| s.files.len())
    }
}

impl OpenSet {
    /// The open file at `path`, marked most recently used; opened (after
    /// closing the least recently used file when full) if it was not.
    fn open(
        &mut self,
        open_max: usize,
        io: &dyn FileIo,
        path: &Path,
    ) -> Result<Arc<File>, StorageError> {
        let stamp = self.next_stamp;
        self.next_stamp += 1;
        if let Some(f) = self.files.get_mut(path) {
            self.by_use.remove(&f.stamp);
            f.stamp = stamp;
            self.by_use.insert(stamp, path.to_path_buf());
            return Ok(f.file.clone());
        }
        while self.files.len() >= open_max {
            self.close_oldest(io)?;
        }
        let file = io
            .open(path, OpenOptions::new().read(true).write(true))
            .map(Arc::new)
            .map_err(|e| io_err(format!("opening {}", path.display()), e))?;
        self.by_use.insert(stamp, path.to_path_buf());
        self.files.insert(
            path.to_path_buf(),
            OpenIndex {
                file: file.clone(),
                path: path.to_path_buf(),
                stamp,
                dirty: false,
            },
        );
        Ok(file)
    }

    fn close_oldest(&mut self, io: &dyn FileIo) -> Result<(), StorageError> {
        let Some((_, key)) = self.by_use.pop_first() else {
            return Ok(());
        };
        let Some(f) = self.files.remove(&key) else {
            return Ok(());
        };
        if f.dirty
            && let Err(e) = durable::sync_data(io, "storage::index_close_sync", &f.file)
        {
            // Keep it: the caller poisons the log, and a later checkpoint
            // must not take the file for clean.
            let path = f.path.clone();
            self.by_use.insert(f.stamp, key.clone());
            self.files.insert(key, f);
            return Err(io_err(format!("fdatasync of {}", path.display()), e));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// Counts fdatasync calls.
    #[derive(Default)]
    struct CountingIo(AtomicUsize);

    impl FileIo for CountingIo {
        fn sync_data(&self, file: &File) -> io::Result<()> {
            self.0.fetch_add(1, Ordering::SeqCst);
            file.sync_data()
        }
    }

    #[test]
    fn a_written_index_file_is_synced_before_it_is_closed() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.idx"), dir.path().join("b.idx"));
        for p in [&a, &b] {
            File::create(p).unwrap();
        }
        let io = CountingIo::default();
        let files = IndexFiles::new(1);
        files.write_at(&io, &a, b"entry", 0).unwrap();
        assert_eq!(io.0.load(Ordering::SeqCst), 0, "no fsync on a write");
        // Opening b closes a, which was written: it is synced first.
        files.write_at(&io, &b, b"entry", 0).unwrap();
        assert_eq!(io.0.load(Ordering::SeqCst), 1);
        assert_eq!(files.open_count(), 1);
        // The checkpoint syncs only what is open and dirty (b), once.
        files.sync_dirty(&io).unwrap();
        files.sync_dirty(&io).unwrap();
        assert_eq!(io.0.load(Ordering::SeqCst), 2);
        // A clean file is closed without another fsync.
        files.write_at(&io, &a, b"entry", 64).unwrap();
        assert_eq!(io.0.load(Ordering::SeqCst), 2);
    }
}
