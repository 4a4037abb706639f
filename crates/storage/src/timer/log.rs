//! The schedule log: append-only segment files of fixed-size schedule
//! records, addressed by global position. It appends records and returns
//! their positions, reads a record back by position, makes everything
//! appended durable, and deletes segments below a position. It knows
//! nothing of slots or chains beyond the `prev` field it stores.
//!
//! A position is a byte address in the log as a whole, not counting segment
//! headers: a segment's file name is the position of its first record, and
//! position `p` of segment `base` is at file offset `24 + (p - base)`.
//! Appends go to a small buffer written out when it fills, when the log is
//! synced, or when the active segment is full; a read of a position still
//! in the buffer is served from it.
//!
//! A failed write or fsync poisons the log: it refuses every later append
//! and sync, and says why.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::error::TimerError;
use super::format::{
    DecodeError, RECORD_BYTES, Record, SEGMENT_HEADER_BYTES, SEGMENT_VERSION, check_segment_header,
    encode_segment_header, show_bytes,
};
use crate::io::{FileIo, durable, failpoint_for};

/// File-name extension of a schedule-log segment.
const SEGMENT_EXTENSION: &str = "tlog";
/// Records read from a segment at once and kept for the next read (4,080
/// bytes): chains rolled together sit side by side.
const READ_BLOCK_BYTES: u64 = 85 * RECORD_BYTES;
/// Appended bytes held before they are written out.
const WRITE_BUFFER_BYTES: usize = 1365 * RECORD_BYTES as usize;
/// The largest position (positions are `i64` on disk, -1 meaning none).
pub(super) const POSITION_MAX: u64 = i64::MAX as u64;
/// Bytes read at once while checking a segment's records at open.
const CHECK_CHUNK_BYTES: u64 = 21_845 * RECORD_BYTES;

/// One segment file.
#[derive(Debug)]
struct Segment {
    path: PathBuf,
    file: File,
    /// Record bytes in the file (after the header), not counting the buffer.
    len: u64,
    /// Everything in the file was fdatasync'd.
    synced: bool,
}

/// The last block read from a segment, for the next read nearby. Each
/// reader has its own, so a read-only walk (`scan`) needs no `&mut` log.
#[derive(Debug, Default)]
pub(super) struct ReadCache {
    /// Base of the segment the block is from.
    segment: u64,
    /// Offset of the block in the segment's records.
    start: u64,
    bytes: Vec<u8>,
}

/// The schedule log of one timer folder.
pub(super) struct ScheduleLog {
    dir: PathBuf,
    io: Arc<dyn FileIo>,
    /// Record bytes a new segment holds (a whole number of records).
    segment_capacity: u64,
    segments: BTreeMap<u64, Segment>,
    /// Position after the last record appended (buffered or written).
    end: u64,
    /// Records appended but not yet written, ending at `end`, all in the
    /// last segment.
    buffer: Vec<u8>,
    /// A segment was created since the folder was last fsync'd.
    dir_dirty: bool,
    poisoned: Option<Arc<str>>,
    /// What the open found to remove, until [`Self::remove_unneeded`].
    cleanup: Option<Cleanup>,
}

/// Segment files to delete and segments to cut (base, record bytes kept).
struct Cleanup {
    remove: Vec<PathBuf>,
    cut: Vec<(u64, u64)>,
}

impl ScheduleLog {
    /// Open the log in `dir` for a checkpoint that vouches for everything
    /// below `end` and needs nothing below `keep_from`.
    ///
    /// Every segment header is checked first (an unknown magic or version
    /// refuses the open); then the segments holding `keep_from .. end` must
    /// be there, back to back, and every record in them must pass its CRC.
    /// Nothing is changed on disk until [`Self::remove_unneeded`], which
    /// deletes the segments wholly below `keep_from` or at or past `end`
    /// and cuts the segment holding `end` there; records below `end` can
    /// be read before it. New segments hold `segment_bytes` bytes, header
    /// included.
    pub fn open(
        dir: &Path,
        io: Arc<dyn FileIo>,
        segment_bytes: u64,
        keep_from: u64,
        end: u64,
    ) -> Result<Self, TimerError> {
        if keep_from > end {
            return Err(TimerError::corrupt(
                dir.display(),
                format!("the checkpoint needs position {keep_from}, past its log end {end}"),
            ));
        }
        let records = segment_bytes.saturating_sub(SEGMENT_HEADER_BYTES) / RECORD_BYTES;
        let found = list_segments(dir, io.as_ref(), end)?;
        let mut kept: BTreeMap<u64, Segment> = BTreeMap::new();
        let mut remove: Vec<PathBuf> = Vec::new();
        let mut cut: Vec<(u64, u64)> = Vec::new();
        for (base, (path, file, data_len)) in found {
            let needed = base < end && base + data_len > keep_from;
            if !needed {
                remove.push(path);
                continue;
            }
            let len = data_len.min(end - base);
            if len < data_len {
                cut.push((base, len));
            }
            let segment = Segment {
                path,
                file,
                len,
                synced: true,
            };
            kept.insert(base, segment);
        }
        check_contiguous(dir, &kept, keep_from, end)?;
        for (&base, segment) in &kept {
            check_records(io.as_ref(), base, segment)?;
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            io,
            segment_capacity: records.max(1) * RECORD_BYTES,
            segments: kept,
            end,
            buffer: Vec::new(),
            dir_dirty: false,
            poisoned: None,
            cleanup: Some(Cleanup { remove, cut }),
        })
    }

    /// Delete the segments [`Self::open`] found unneeded and cut the one
    /// holding the end; before any append. Not synced: a crash that undoes
    /// it leaves segments the next open removes again.
    pub fn remove_unneeded(&mut self) -> Result<(), TimerError> {
        let Some(cleanup) = self.cleanup.take() else {
            return Ok(());
        };
        for path in cleanup.remove {
            self.io
                .remove_file(&path)
                .map_err(|e| TimerError::io(format!("removing {}", path.display()), e))?;
        }
        for (base, len) in cleanup.cut {
            if let Some(segment) = self.segments.get(&base) {
                let cut = self.io.set_len(&segment.file, SEGMENT_HEADER_BYTES + len);
                cut.map_err(|e| TimerError::io(format!("cutting {}", segment.path.display()), e))?;
            }
        }
        Ok(())
    }

    /// Position after the last record appended.
    pub fn end(&self) -> u64 {
        self.end
    }

    /// Why the log refuses writes, if it does.
    pub fn poisoned(&self) -> Option<&Arc<str>> {
        self.poisoned.as_ref()
    }

    /// Segment files the log holds.
    #[cfg(test)]
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Append `record`; returns its position. Not durable until [`Self::sync`].
    pub fn append(&mut self, record: &Record) -> Result<u64, TimerError> {
        self.refuse_if_poisoned()?;
        if self.cleanup.is_some() {
            return Err(TimerError::invariant(
                "an append before the open's cleanup: it would land past a torn tail",
            ));
        }
        let full = match self.segments.last_key_value() {
            None => true,
            Some((base, _)) => self.end + RECORD_BYTES > base + self.segment_capacity,
        };
        if full {
            self.flush()?;
            self.create_segment()?;
        }
        let pos = self.end;
        self.buffer.extend_from_slice(&record.encode());
        self.end += RECORD_BYTES;
        if self.buffer.len() >= WRITE_BUFFER_BYTES {
            self.flush()?;
        }
        Ok(pos)
    }

    /// The record at `pos`, which must be a record of the log.
    pub fn read(&self, pos: u64, cache: &mut ReadCache) -> Result<Record, TimerError> {
        if pos.checked_add(RECORD_BYTES).is_none_or(|e| e > self.end) {
            return Err(self.corrupt_at(pos, format!("past the log end {}", self.end)));
        }
        let buffered_from = self.end - self.buffer.len() as u64;
        if pos >= buffered_from {
            let at = (pos - buffered_from) as usize;
            let bytes = self.buffer.get(at..at + RECORD_BYTES as usize);
            let bytes = bytes.ok_or_else(|| self.corrupt_at(pos, "outside the write buffer"))?;
            return Record::decode(bytes).map_err(|e| self.decode_error(pos, e));
        }
        let Some((&base, segment)) = self.segments.range(..=pos).next_back() else {
            return Err(self.corrupt_at(pos, "in no segment"));
        };
        let rel = pos - base;
        if !rel.is_multiple_of(RECORD_BYTES) || rel + RECORD_BYTES > segment.len {
            return Err(self.corrupt_at(
                pos,
                format!(
                    "not a record boundary of segment {base} ({} bytes)",
                    segment.len
                ),
            ));
        }
        let cached = cache.segment == base
            && cache.start <= rel
            && rel + RECORD_BYTES <= cache.start + cache.bytes.len() as u64;
        if !cached {
            let start = rel - rel % READ_BLOCK_BYTES;
            let len = READ_BLOCK_BYTES.min(segment.len - start);
            cache.bytes.resize(len as usize, 0);
            cache.segment = base;
            cache.start = start;
            if let Err(e) = self.io.read_exact_at(
                &segment.file,
                &mut cache.bytes,
                SEGMENT_HEADER_BYTES + start,
            ) {
                cache.bytes.clear();
                return Err(TimerError::io(
                    format!("reading {} at position {pos}", segment.path.display()),
                    e,
                ));
            }
        }
        let at = (rel - cache.start) as usize;
        let bytes = cache.bytes.get(at..at + RECORD_BYTES as usize);
        let bytes = bytes.ok_or_else(|| self.corrupt_at(pos, "outside the block read"))?;
        Record::decode(bytes).map_err(|e| self.decode_error(pos, e))
    }

    /// Make every record appended so far durable: write the buffer,
    /// fdatasync every segment written since the last sync, and fsync the
    /// folder if a segment was created.
    pub fn sync(&mut self) -> Result<(), TimerError> {
        self.refuse_if_poisoned()?;
        self.flush()?;
        let io = Arc::clone(&self.io);
        for segment in self.segments.values_mut().filter(|s| !s.synced) {
            let synced = durable::sync_data(io.as_ref(), "storage::timer_log_sync", &segment.file);
            if let Err(e) = synced {
                let context = format!("fdatasync of {}", segment.path.display());
                return Err(self.poison(context, e));
            }
            segment.synced = true;
        }
        if self.dir_dirty {
            if let Err(e) = durable::sync_dir(io.as_ref(), "storage::timer_dir_sync", &self.dir) {
                let context = format!("fsync of {}", self.dir.display());
                return Err(self.poison(context, e));
            }
            self.dir_dirty = false;
        }
        Ok(())
    }

    /// Delete every segment but the active one whose records all lie below
    /// `pos`; returns how many were deleted. A removal that fails is
    /// reported and tried again next time (the segment stays in use).
    pub fn delete_below(&mut self, pos: u64) -> Result<usize, TimerError> {
        let last = self.segments.last_key_value().map(|(b, _)| *b);
        let doomed: Vec<u64> = self
            .segments
            .iter()
            .filter(|(base, s)| Some(**base) != last && **base + s.len <= pos)
            .map(|(base, _)| *base)
            .collect();
        for base in &doomed {
            if let Some(segment) = self.segments.get(base) {
                self.io.remove_file(&segment.path).map_err(|e| {
                    TimerError::io(format!("removing {}", segment.path.display()), e)
                })?;
            }
            self.segments.remove(base);
        }
        Ok(doomed.len())
    }

    fn refuse_if_poisoned(&self) -> Result<(), TimerError> {
        match &self.poisoned {
            Some(reason) => Err(TimerError::Poisoned {
                reason: Arc::clone(reason),
            }),
            None => Ok(()),
        }
    }

    /// Poison the log with the failure of `context`, and return it.
    fn poison(&mut self, context: String, e: std::io::Error) -> TimerError {
        let error = TimerError::io(context, e);
        self.poisoned = Some(error.to_string().into());
        error
    }

    /// Write the buffer at the end of the last segment (no fsync).
    pub fn flush(&mut self) -> Result<(), TimerError> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let start = self.end - self.buffer.len() as u64;
        let Some((&base, segment)) = self.segments.last_key_value() else {
            let detail = format!("{} buffered bytes and no segment", self.buffer.len());
            return Err(TimerError::invariant(detail));
        };
        if base + segment.len != start {
            return Err(TimerError::invariant(format!(
                "the buffer starts at {start}, segment {base} ends at {}",
                base + segment.len
            )));
        }
        let written = failpoint_for(self.io.as_ref(), "storage::timer_log_write").and_then(|()| {
            self.io.write_all_at(
                &segment.file,
                &self.buffer,
                SEGMENT_HEADER_BYTES + segment.len,
            )
        });
        if let Err(e) = written {
            let context = format!("writing {}", segment.path.display());
            return Err(self.poison(context, e));
        }
        let n = self.buffer.len() as u64;
        self.buffer.clear();
        if let Some(segment) = self.segments.get_mut(&base) {
            segment.len += n;
            segment.synced = false;
        }
        Ok(())
    }

    /// Start a segment at the log end.
    fn create_segment(&mut self) -> Result<(), TimerError> {
        let base = self.end;
        let path = self.dir.join(segment_name(base));
        let mut options = OpenOptions::new();
        options.read(true).write(true).create_new(true);
        let created = self.io.open(&path, &options).and_then(|file| {
            self.io
                .write_all_at(&file, &encode_segment_header(base), 0)
                .map(|()| file)
        });
        let file = match created {
            Ok(file) => file,
            Err(e) => return Err(self.poison(format!("creating {}", path.display()), e)),
        };
        let segment = Segment {
            path,
            file,
            len: 0,
            synced: false,
        };
        self.segments.insert(base, segment);
        self.dir_dirty = true;
        Ok(())
    }

    fn corrupt_at(&self, pos: u64, detail: impl std::fmt::Display) -> TimerError {
        TimerError::corrupt(
            self.dir.display(),
            format!("schedule-log position {pos}: {detail}"),
        )
    }

    fn decode_error(&self, pos: u64, e: DecodeError) -> TimerError {
        let detail = match e {
            DecodeError::Corrupt(d) => d,
            other => format!("{other:?}"),
        };
        self.corrupt_at(pos, detail)
    }
}

/// `<20-digit base>.tlog`.
fn segment_name(base: u64) -> String {
    format!("{base:020}.{SEGMENT_EXTENSION}")
}

/// Every segment file of `dir`, by base: its path, open file, and record
/// bytes. Each header is checked; a file too short for one is a creation a
/// crash cut short, allowed only at or past `end` (it is then listed with
/// no records, to be deleted).
fn list_segments(
    dir: &Path,
    io: &dyn FileIo,
    end: u64,
) -> Result<BTreeMap<u64, (PathBuf, File, u64)>, TimerError> {
    let entries = io
        .read_dir(dir)
        .map_err(|e| TimerError::io(format!("listing {}", dir.display()), e))?;
    let mut found = BTreeMap::new();
    for path in entries {
        if path.extension().and_then(|e| e.to_str()) != Some(SEGMENT_EXTENSION) {
            continue;
        }
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
        let base = match stem.parse::<u64>() {
            Ok(base) if stem.len() == 20 && base <= POSITION_MAX => base,
            _ => {
                return Err(TimerError::corrupt(
                    path.display(),
                    format!(
                        "a segment's name is its first position in 20 digits, at most {POSITION_MAX}"
                    ),
                ));
            }
        };
        let file = io
            .open(&path, OpenOptions::new().read(true).write(true))
            .map_err(|e| TimerError::io(format!("opening {}", path.display()), e))?;
        let len = io
            .len(&file)
            .map_err(|e| TimerError::io(format!("reading the length of {}", path.display()), e))?;
        if len < SEGMENT_HEADER_BYTES {
            if base < end {
                let detail = format!("{len} bytes, shorter than a segment header");
                return Err(TimerError::corrupt(path.display(), detail));
            }
            found.insert(base, (path, file, 0));
            continue;
        }
        let mut header = [0u8; SEGMENT_HEADER_BYTES as usize];
        io.read_exact_at(&file, &mut header, 0)
            .map_err(|e| TimerError::io(format!("reading {}", path.display()), e))?;
        check_segment_header(&header, base).map_err(|e| header_error(&path, e))?;
        found.insert(base, (path, file, len - SEGMENT_HEADER_BYTES));
    }
    Ok(found)
}

fn header_error(path: &Path, e: DecodeError) -> TimerError {
    let file = path.display().to_string();
    let what = "schedule-log segment";
    match e {
        DecodeError::Magic(found) => TimerError::UnknownMagic {
            file,
            what,
            expected: show_bytes(&super::format::SEGMENT_MAGIC),
            found: show_bytes(&found),
        },
        DecodeError::Version(found) => TimerError::UnsupportedVersion {
            file,
            what,
            found,
            supported: SEGMENT_VERSION,
        },
        DecodeError::Corrupt(detail) => TimerError::Corrupt { file, detail },
    }
}

/// The kept segments must hold `keep_from .. end` back to back, each a
/// whole number of records.
fn check_contiguous(
    dir: &Path,
    kept: &BTreeMap<u64, Segment>,
    keep_from: u64,
    end: u64,
) -> Result<(), TimerError> {
    let corrupt = |detail: String| TimerError::corrupt(dir.display(), detail);
    let mut next: Option<u64> = None;
    for (&base, segment) in kept {
        if !segment.len.is_multiple_of(RECORD_BYTES) {
            let detail = format!("segment {base} holds {} bytes of records", segment.len);
            return Err(corrupt(detail));
        }
        match next {
            None if keep_from < end && base > keep_from => {
                return Err(corrupt(format!(
                    "the checkpoint needs position {keep_from}, but the first segment kept \
                     starts at {base}"
                )));
            }
            Some(n) if n != base => {
                return Err(corrupt(format!(
                    "segment {base} does not start where the one before it ends ({n})"
                )));
            }
            _ => {}
        }
        next = Some(base + segment.len);
    }
    if keep_from < end && next != Some(end) {
        let ends = next.map_or("nowhere (no segment)".to_string(), |n| n.to_string());
        return Err(corrupt(format!(
            "the checkpoint vouches for positions {keep_from} .. {end}, but the log ends at {ends}"
        )));
    }
    Ok(())
}

/// Every record of `segment` (up to its kept length) must pass its CRC and
/// name a previous record below itself.
fn check_records(io: &dyn FileIo, base: u64, segment: &Segment) -> Result<(), TimerError> {
    let mut buf = Vec::new();
    let mut at = 0;
    while at < segment.len {
        let n = CHECK_CHUNK_BYTES.min(segment.len - at);
        buf.resize(n as usize, 0);
        io.read_exact_at(&segment.file, &mut buf, SEGMENT_HEADER_BYTES + at)
            .map_err(|e| TimerError::io(format!("reading {}", segment.path.display()), e))?;
        for (i, bytes) in buf.chunks_exact(RECORD_BYTES as usize).enumerate() {
            let pos = base + at + i as u64 * RECORD_BYTES;
            let bad = |detail: String| {
                let detail = format!("record at position {pos}: {detail}");
                TimerError::corrupt(segment.path.display(), detail)
            };
            let record = Record::decode(bytes).map_err(|e| bad(format!("{e:?}")))?;
            if record.prev.is_some_and(|p| p >= pos) {
                return Err(bad(format!(
                    "names a later previous record {:?}",
                    record.prev
                )));
            }
        }
        at += n;
    }
    Ok(())
}
