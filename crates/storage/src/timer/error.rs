//! The timer store's one error type: every way `open`, `add`, `poll`,
//! `cancel`, `checkpoint` and `scan` can fail, each with what was found and
//! what to do.

use std::sync::Arc;

/// A failure of the timer store ([`super::TimerStore`]).
#[derive(Debug, thiserror::Error)]
pub enum TimerError {
    /// A file operation failed. A failed write or fsync also poisons the
    /// store (every later change is refused with [`TimerError::Poisoned`]).
    #[error("{context}: {source}")]
    Io {
        /// What was being done, and on which file.
        context: String,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A file in the timer folder does not start with the magic of its kind:
    /// it was not written by the timer store.
    #[error(
        "{file} does not start with the {what} magic {expected:?} (found {found:?}): it is not a \
         timer file. Move it out of the timer folder (or give the timer store a folder of its \
         own). Nothing was changed on disk"
    )]
    UnknownMagic {
        /// The file.
        file: String,
        /// The kind of file its name says it is (`schedule-log segment`, `checkpoint`).
        what: &'static str,
        /// The magic this build expects.
        expected: String,
        /// The first bytes found.
        found: String,
    },
    /// A file names a format version this build does not read: a newer Weir
    /// wrote it.
    #[error(
        "{file} is a {what} of version {found}; this build reads version {supported} only. A newer \
         version of Weir wrote this timer folder: run that version (or a later one) on it, do not \
         downgrade. Nothing was changed on disk"
    )]
    UnsupportedVersion {
        /// The file.
        file: String,
        /// The kind of file (`schedule-log segment`, `checkpoint`).
        what: &'static str,
        /// The version found.
        found: u32,
        /// The version this build reads.
        supported: u32,
    },
    /// The checkpoint was written with another wheel than the one asked
    /// for; slot positions would all be wrong under the new one.
    #[error(
        "{file} was written with slot_ms = {stored_slot_ms} and slots = {stored_slots}, but the \
         timer store is opened with slot_ms = {slot_ms} and slots = {slots}. Open it with the \
         stored values; to change the wheel, drain the store (pending() = 0), checkpoint, stop, \
         and remove the folder. Nothing was changed on disk"
    )]
    ConfigMismatch {
        /// The checkpoint file.
        file: String,
        /// `slot_ms` in the checkpoint.
        stored_slot_ms: i64,
        /// `slots` in the checkpoint.
        stored_slots: u32,
        /// `slot_ms` asked for.
        slot_ms: i64,
        /// `slots` asked for.
        slots: u32,
    },
    /// The wheel asked for is outside the limits.
    #[error("invalid timer config: {detail}")]
    InvalidConfig {
        /// What is wrong, with the limit.
        detail: String,
    },
    /// A file does not match its checksum or its layout where it must: data
    /// a checkpoint vouches for is damaged or missing.
    #[error(
        "corrupt {file}: {detail}. Nothing was repaired or removed. Restore the timer folder from \
         a copy, or remove it and re-add every pending entry from its source"
    )]
    Corrupt {
        /// The file.
        file: String,
        /// What is wrong, and where.
        detail: String,
    },
    /// A write, fsync or invariant failed earlier; the store refuses every
    /// change until it is reopened (at its last checkpoint).
    #[error(
        "the timer store refuses changes after an earlier failure: {reason}. Reopen it: it comes \
         back at its last checkpoint"
    )]
    Poisoned {
        /// The original failure.
        reason: Arc<str>,
    },
    /// Too many cancels wait to meet their entries.
    #[error(
        "{limit} cancels are already outstanding, the limit: the entries they name have not been \
         met yet. Retry once `poll` has passed some of them"
    )]
    TooManyCancels {
        /// The limit.
        limit: usize,
    },
    /// Entries of too many partitions are pending: the per-partition counts
    /// (kept in memory and in every checkpoint) are bounded.
    #[error(
        "entries of {limit} partitions are already pending, the limit; an entry of another \
         partition waits until one of them has none left"
    )]
    TooManyPartitions {
        /// The limit.
        limit: usize,
    },
    /// A due time beyond what the store schedules.
    #[error(
        "due time {due_ms} ms is more than {delay_max_ms} ms past the timer's cursor \
         ({cursor_ms} ms); the timer store schedules at most that far ahead"
    )]
    DueOutOfRange {
        /// The due time asked for.
        due_ms: i64,
        /// The cursor when it was asked.
        cursor_ms: i64,
        /// The longest delay past the cursor.
        delay_max_ms: i64,
    },
    /// A clock reading outside `0 ..= max_ms` (a broken clock).
    #[error("the clock reads {now_ms} ms, outside 0 ..= {max_ms} ms")]
    ClockOutOfRange {
        /// The time given.
        now_ms: i64,
        /// The largest time the store accepts.
        max_ms: i64,
    },
    /// The caller's progress map is longer than a checkpoint holds.
    #[error("the progress map has {len} entries; a timer checkpoint holds at most {max}")]
    TooMuchProgress {
        /// Entries given.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The store found its own state inconsistent (an ordering or count
    /// invariant). It is poisoned: reopen it at its last checkpoint.
    #[error("timer store invariant broken: {detail}")]
    Invariant {
        /// Which invariant, with the values.
        detail: String,
    },
}

impl TimerError {
    /// An I/O error naming what was being done.
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }

    /// Corruption of `file`.
    pub(crate) fn corrupt(file: impl std::fmt::Display, detail: impl Into<String>) -> Self {
        Self::Corrupt {
            file: file.to_string(),
            detail: detail.into(),
        }
    }

    /// A broken invariant.
    pub(crate) fn invariant(detail: impl Into<String>) -> Self {
        Self::Invariant {
            detail: detail.into(),
        }
    }

    /// Whether the failure shows the store's memory or files in a state it
    /// must not carry on from (corruption met at run time, a broken
    /// invariant), so the store poisons itself. A failed write or fsync
    /// poisons the schedule log where it happens; a failed read changes
    /// nothing and does not poison.
    pub(crate) fn poisons(&self) -> bool {
        matches!(self, Self::Corrupt { .. } | Self::Invariant { .. })
    }
}
