//! Replacing a file atomically: the new content goes to a temporary file,
//! which is written, fdatasync'd and renamed over the old one (the commit
//! point), then the folder is fsync'd so the rename itself survives a crash.
//! A reader finds the old file or the new one, never a mix.

use std::fmt;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

/// The step of [`replace_file`] that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplaceStep {
    /// Creating the temporary file.
    Create,
    /// Writing the temporary file.
    Write,
    /// Syncing the temporary file.
    Sync,
    /// Renaming it over the file: the old file is still in place.
    Rename,
    /// Syncing the folder after the rename: which file a restart finds is
    /// unknown.
    SyncDir,
}

impl fmt::Display for ReplaceStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Create => "cannot create",
            Self::Write => "cannot write",
            Self::Sync => "cannot fsync",
            Self::Rename => "cannot rename into place",
            Self::SyncDir => "cannot fsync the folder",
        })
    }
}

/// A failed [`replace_file`]: the step, the path it acted on, and why.
#[derive(Debug, thiserror::Error)]
#[error("{step} {}: {source}", path.display())]
pub struct ReplaceError {
    /// What failed.
    pub step: ReplaceStep,
    /// The temporary file, the file replaced (rename) or the folder.
    pub path: PathBuf,
    /// The operating system's error.
    #[source]
    pub source: io::Error,
}

/// The file operations [`replace_file_with`] runs, so a caller can route
/// them through its own I/O layer (and its failpoints). Each default is the
/// operating system's call; `sync` has none (`File::sync_data` or
/// `File::sync_all`, the caller says).
pub trait ReplaceIo {
    /// Create (or empty) the temporary file, for writing.
    fn create(&self, tmp: &Path) -> io::Result<File> {
        File::create(tmp)
    }
    /// Make the temporary file's content durable.
    fn sync(&self, file: &File) -> io::Result<()>;
    /// Rename the temporary file over the file.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }
    /// fsync the folder after the rename.
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        sync_dir(dir)
    }
}

/// Replace `path` with what `write` puts in a new file at `tmp` (in the same
/// folder), made durable by `sync` before the rename. `write` and `sync`
/// are the caller's, so it can route them through its own I/O layer (and
/// its failpoints); `File::sync_data` is the usual `sync`.
pub fn replace_file(
    tmp: &Path,
    path: &Path,
    write: impl FnOnce(&File) -> io::Result<()>,
    sync: impl Fn(&File) -> io::Result<()>,
) -> Result<(), ReplaceError> {
    /// The operating system's calls, with the caller's sync.
    struct SyncWith<S>(S);
    impl<S: Fn(&File) -> io::Result<()>> ReplaceIo for SyncWith<S> {
        fn sync(&self, file: &File) -> io::Result<()> {
            (self.0)(file)
        }
    }
    replace_file_with(&SyncWith(sync), tmp, path, write)
}

/// [`replace_file`] with every file operation (create, sync, rename, folder
/// fsync) through `io`.
pub fn replace_file_with(
    io: &impl ReplaceIo,
    tmp: &Path,
    path: &Path,
    write: impl FnOnce(&File) -> io::Result<()>,
) -> Result<(), ReplaceError> {
    let failed = |step, path: &Path| {
        let path = path.to_path_buf();
        move |source| ReplaceError { step, path, source }
    };
    let file = io.create(tmp).map_err(failed(ReplaceStep::Create, tmp))?;
    write(&file).map_err(failed(ReplaceStep::Write, tmp))?;
    io.sync(&file).map_err(failed(ReplaceStep::Sync, tmp))?;
    drop(file);
    io.rename(tmp, path)
        .map_err(failed(ReplaceStep::Rename, path))?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    io.sync_dir(dir).map_err(failed(ReplaceStep::SyncDir, dir))
}

/// fsync a folder, so the creations, renames and removals in it are durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::os::unix::fs::FileExt;

    use super::*;

    fn write_all(bytes: &[u8]) -> impl FnOnce(&File) -> io::Result<()> + '_ {
        move |f| f.write_all_at(bytes, 0)
    }

    #[test]
    fn the_new_content_replaces_the_old_and_the_temp_file_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let (tmp, path) = (dir.path().join("f.tmp"), dir.path().join("f"));
        std::fs::write(&path, b"old content, longer").unwrap();
        replace_file(&tmp, &path, write_all(b"new"), File::sync_data).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        assert!(!tmp.exists());
    }

    #[test]
    fn a_failed_write_or_sync_leaves_the_old_file_and_names_the_step() {
        let dir = tempfile::tempdir().unwrap();
        let (tmp, path) = (dir.path().join("f.tmp"), dir.path().join("f"));
        std::fs::write(&path, b"old").unwrap();
        let fail = |_: &File| Err(io::Error::other("injected"));
        let err = replace_file(&tmp, &path, fail, File::sync_data).unwrap_err();
        assert_eq!(
            (err.step, err.path.as_path()),
            (ReplaceStep::Write, tmp.as_path())
        );
        let err = replace_file(&tmp, &path, |mut f: &File| f.write_all(b"new"), fail).unwrap_err();
        assert_eq!(err.step, ReplaceStep::Sync);
        assert_eq!(
            err.to_string(),
            format!("cannot fsync {}: injected", tmp.display())
        );
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
    }

    /// Records the operations in order; fails the one named.
    struct Recording {
        ops: std::cell::RefCell<Vec<&'static str>>,
        fail: &'static str,
    }

    impl Recording {
        fn run(&self, op: &'static str) -> io::Result<()> {
            self.ops.borrow_mut().push(op);
            if op == self.fail {
                return Err(io::Error::other("injected"));
            }
            Ok(())
        }
    }

    impl ReplaceIo for Recording {
        fn create(&self, tmp: &Path) -> io::Result<File> {
            self.run("create")?;
            File::create(tmp)
        }
        fn sync(&self, file: &File) -> io::Result<()> {
            self.run("sync")?;
            file.sync_data()
        }
        fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
            self.run("rename")?;
            std::fs::rename(from, to)
        }
        fn sync_dir(&self, dir: &Path) -> io::Result<()> {
            self.run("sync_dir")?;
            sync_dir(dir)
        }
    }

    #[test]
    fn replace_file_with_runs_every_step_through_the_callers_io() {
        let dir = tempfile::tempdir().unwrap();
        let (tmp, path) = (dir.path().join("f.tmp"), dir.path().join("f"));
        std::fs::write(&path, b"old").unwrap();
        let io = Recording {
            ops: Default::default(),
            fail: "rename",
        };
        let err = replace_file_with(&io, &tmp, &path, write_all(b"new")).unwrap_err();
        assert_eq!(
            (err.step, err.path.as_path()),
            (ReplaceStep::Rename, path.as_path())
        );
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        let io = Recording {
            ops: Default::default(),
            fail: "none",
        };
        replace_file_with(&io, &tmp, &path, write_all(b"new")).unwrap();
        assert_eq!(*io.ops.borrow(), ["create", "sync", "rename", "sync_dir"]);
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
    }

    #[test]
    fn a_missing_folder_fails_at_create() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing");
        let err = replace_file(
            &missing.join("f.tmp"),
            &missing.join("f"),
            write_all(b"x"),
            File::sync_data,
        )
        .unwrap_err();
        assert_eq!(err.step, ReplaceStep::Create);
    }
}
