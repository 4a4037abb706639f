//! The bottom layer of Weir's crates, imported by every crate that keeps
//! shared state or durable files, and importing no Weir crate itself.
//!
//! - [`lock`], [`read`] and [`write`]: take a std lock, where a lock that a
//!   panic poisoned is an error ([`PoisonedLock`]), never read past. A panic
//!   while a lock was held may have left its data half updated; each crate
//!   turns the error into its own (`From`) and refuses the operation.
//! - [`replace_file`]: replace a file atomically (temp file, write,
//!   fdatasync, rename, fsync of the folder), with the write and the sync
//!   handed in so a caller can route them through its own I/O layer;
//!   [`replace_file_with`] takes every step (create, sync, rename, folder
//!   fsync) from the caller's [`ReplaceIo`].

mod lock;
mod replace;

pub use lock::{PoisonedLock, lock, read, write};
pub use replace::{
    ReplaceError, ReplaceIo, ReplaceStep, replace_file, replace_file_with, sync_dir,
};
