//! The file operations whose failure matters for durability (writes and
//! fdatasync), behind a trait so tests can inject failures.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// Positional writes and syncs of commit-log, index and checkpoint files.
pub(crate) trait FileIo: Send + Sync + 'static {
    /// Write all of `buf` at `offset`.
    fn write_all_at(&self, file: &File, buf: &[u8], offset: u64) -> io::Result<()> {
        file.write_all_at(buf, offset)
    }

    /// fdatasync.
    fn sync_data(&self, file: &File) -> io::Result<()> {
        file.sync_data()
    }
}

/// The operating system's file calls.
#[derive(Debug, Default)]
pub(crate) struct OsIo;

impl FileIo for OsIo {}
