//! The data folder's lock: one broker per data folder, as Kafka's `.lock`.
//!
//! Two brokers on one folder would each recover, index and append to the
//! same commit log, and acknowledged records of one would be lost to the
//! other. The lock is an exclusive `flock` on `<data-dir>/.lock`, taken
//! before anything in the folder is read and held for the broker's life. The
//! kernel drops it when the process ends however it ends (SIGKILL
//! included), so a stale file never blocks a restart. The file holds the
//! holder's PID, so that the broker refused can say which process holds it.

use std::fs::{File, OpenOptions};
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};

/// The lock file's name inside the data folder (Kafka's name).
pub const LOCK_FILE_NAME: &str = ".lock";
/// The most bytes of the lock file read back to name its holder; a PID and
/// a line break fit many times over.
const HOLDER_BYTES_MAX: u64 = 64;

/// Why the data folder could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// The lock file could not be opened or created.
    #[error("cannot open the lock file {}", path.display())]
    Open {
        /// `<data-dir>/.lock`.
        path: PathBuf,
        /// The file system's error.
        source: std::io::Error,
    },
    /// Another process holds the lock (exit code 1, not a usage error).
    #[error(
        "the data folder {} is in use by another broker ({holder}, which holds {}); \
         stop that broker or give this one another --data-dir",
        data_dir.display(),
        path.display()
    )]
    InUse {
        /// The data folder.
        data_dir: PathBuf,
        /// "pid N", or why the PID cannot be told.
        holder: String,
        /// `<data-dir>/.lock`.
        path: PathBuf,
    },
    /// `flock` failed for another reason than a holder.
    #[error("cannot lock the data folder ({})", path.display())]
    Lock {
        /// `<data-dir>/.lock`.
        path: PathBuf,
        /// The system call's error.
        source: std::io::Error,
    },
}

/// The held lock; dropping it (or the process ending) releases it.
#[derive(Debug)]
pub struct DataDirLock {
    // Held only for its flock.
    _file: File,
    path: PathBuf,
}

impl DataDirLock {
    /// Takes the lock of `data_dir` (which must exist) and writes this
    /// process's PID into it. Fails, naming the holder's PID, when another
    /// process holds it.
    pub fn acquire(data_dir: &Path) -> Result<DataDirLock, LockError> {
        let path = data_dir.join(LOCK_FILE_NAME);
        // Not truncated on open: the holder's PID must survive a refused start.
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|source| LockError::Open {
                path: path.clone(),
                source,
            })?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(LockError::InUse {
                    data_dir: data_dir.to_owned(),
                    holder: holder(&mut file),
                    path,
                });
            }
            Err(std::fs::TryLockError::Error(err)) => {
                return Err(LockError::Lock { path, source: err });
            }
        }
        // The PID only helps a refused start name the holder; the flock is
        // what protects the folder. On a full disk the write can fail, and
        // the broker must still start (read-only, or to say what to remove).
        let written = file
            .set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)).map(|_| ()))
            .and_then(|()| writeln!(file, "{}", std::process::id()))
            .and_then(|()| file.sync_data());
        if let Err(err) = written {
            tracing::warn!(
                lock = %path.display(),
                %err,
                "locked the data folder but could not write this broker's PID into the lock file"
            );
        }
        Ok(DataDirLock { _file: file, path })
    }

    /// Where the lock file is.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// "pid N" from the lock file, or why it cannot be told.
fn holder(file: &mut File) -> String {
    let mut text = String::new();
    match file.take(HOLDER_BYTES_MAX).read_to_string(&mut text) {
        Ok(_) => match text.trim().parse::<u32>() {
            Ok(pid) => format!("pid {pid}"),
            // The holder locks first and writes its PID next.
            Err(_) if text.trim().is_empty() => "pid not yet written".to_owned(),
            Err(_) => format!("unreadable pid {:?}", text.trim()),
        },
        Err(err) => format!("pid unreadable: {err}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_folder_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = DataDirLock::acquire(dir.path()).expect("first lock");
        let written = std::fs::read_to_string(first.path()).expect("read lock file");
        assert_eq!(written.trim(), std::process::id().to_string());
        let refused = DataDirLock::acquire(dir.path()).expect_err("second lock");
        assert!(
            refused
                .to_string()
                .contains(&format!("pid {}", std::process::id())),
            "{refused}"
        );
        drop(first);
        DataDirLock::acquire(dir.path()).expect("lock after release");
    }
}
