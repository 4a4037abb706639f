//! Opening the log after a clean stop or a crash: load the checkpoint and
//! the index files, drop index entries past the checkpoint, then scan only
//! the commit-log tail past the checkpoint position, checking each entry's
//! CRC32C, cutting a torn or corrupt tail, and re-indexing what is valid.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::error::StorageError;
use crate::format::{
    self, Checkpoint, ENTRY_BATCH_BYTES_MAX, ENTRY_HEADER_BYTES, ENTRY_PREFIX_BYTES, EntryKind,
    INDEX_ENTRY_BYTES, INDEX_HEADER_BYTES, IndexEntry, SEGMENT_HEADER_BYTES,
};
use crate::io::{FileIo, IndexFiles};
use crate::log::{
    CHECKPOINT_FILE, CHECKPOINT_TMP_FILE, LogInner, LogParts, Segment, io_err, segment_file_name,
    sync_dir,
};
use crate::partition::{PartitionInner, PartitionState};
use crate::producer::ProducerTable;
use crate::{Clock, LogConfig, PartitionConfig, PartitionId, RecoveryReport};

/// The largest index file loaded; a longer one is corruption (16 M batches).
const INDEX_FILE_BYTES_MAX: u64 = 1 << 30;

fn corrupt(file: &Path, detail: impl Into<String>) -> StorageError {
    StorageError::Corrupt {
        file: file.display().to_string(),
        detail: detail.into(),
    }
}

/// Open (or create) the log under `dir`.
pub(crate) fn open(
    dir: &Path,
    config: LogConfig,
    clock: Arc<dyn Clock>,
    io: Arc<dyn FileIo>,
) -> Result<(Arc<LogInner>, RecoveryReport), StorageError> {
    let started = Instant::now();
    let log_dir = dir.join("log");
    let index_dir = dir.join("index");
    for d in [dir, &log_dir, &index_dir] {
        std::fs::create_dir_all(d).map_err(|e| io_err(format!("creating {}", d.display()), e))?;
    }
    let _ = std::fs::remove_file(dir.join(CHECKPOINT_TMP_FILE));
    let checkpoint = load_checkpoint(&dir.join(CHECKPOINT_FILE))?;
    let mut report = RecoveryReport::default();

    let mut segments = load_segments(
        &log_dir,
        checkpoint.as_ref().map_or(0, |c| c.position),
        &mut report,
    )?;
    if segments.is_empty() {
        let base = checkpoint.as_ref().map_or(0, |c| c.position);
        let seg = create_segment(&log_dir, base, io.as_ref())?;
        segments.insert(base, Arc::new(seg));
    }
    let first_base = segments.keys().next().copied().unwrap_or(0);

    let mut partitions = load_indexes(&index_dir, checkpoint.as_ref())?;
    report.partitions = partitions.len();

    // Scan the tail past the checkpoint.
    let scan_from = checkpoint
        .as_ref()
        .map_or(first_base, |c| c.position)
        .max(first_base);
    let index_files = IndexFiles::new(config.index_open_files_max);
    let write_pos = scan_tail(
        &mut segments,
        scan_from,
        &mut partitions,
        (io.as_ref(), &index_files),
        &mut report,
    )?;

    // Finish each partition: forget dead batches, rebuild producers.
    let mut registry = HashMap::new();
    for (id, mut st) in partitions {
        if let Some(first_live) = st
            .entries
            .iter()
            .position(|e| e.entry.position >= first_base)
        {
            let base = st
                .entries
                .get(first_live)
                .map_or(st.log_start, |e| e.entry.base_offset);
            if first_live > 0 {
                st.log_start = st.log_start.max(base);
            }
        } else if let Some(last) = st.entries.back() {
            // Every batch lay in deleted segments.
            st.log_start = st.log_start.max(last.entry.last_offset() + 1);
        }
        st.log_end = st.log_end.max(st.log_start);
        st.trim();
        st.hw = st.log_end;
        st.durable_end = st.log_end;
        st.rebuild_producers();
        registry.insert(
            id,
            Arc::new(PartitionInner {
                id,
                state: Mutex::new(st),
            }),
        );
    }

    // Make what recovery kept durable before anything is acknowledged on top of it.
    let scan_segment = segments
        .range(..=scan_from)
        .next_back()
        .map_or(0, |(b, _)| *b);
    for seg in segments.range(scan_segment..).map(|(_, s)| s) {
        io.sync_data(&seg.file)
            .map_err(|e| io_err(format!("fdatasync of {}", seg.path.display()), e))?;
    }
    sync_dir(&log_dir).map_err(|e| io_err(format!("fsync of {}", log_dir.display()), e))?;

    let active = segments
        .values()
        .next_back()
        .cloned()
        .ok_or_else(|| corrupt(&log_dir, "no segment after recovery"))?;
    let inner = Arc::new(LogInner::new(LogParts {
        dir: dir.to_path_buf(),
        config,
        clock,
        io,
        segments,
        active,
        write_pos,
        partitions: registry,
        index_files,
    }));
    inner.write_checkpoint()?;
    inner.start_flusher()?;
    report.elapsed_ms = started.elapsed().as_millis() as u64;
    if report.bytes_truncated > 0 {
        tracing::warn!(
            bytes = report.bytes_truncated,
            "cut a torn or corrupt commit-log tail (writes that were never acknowledged as durable)"
        );
    }
    tracing::info!(?report, "commit log opened");
    Ok((inner, report))
}

fn load_checkpoint(path: &Path) -> Result<Option<Checkpoint>, StorageError> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(format!("reading {}", path.display()), e)),
    };
    if meta.len() > format::CHECKPOINT_BYTES_MAX {
        return Err(corrupt(path, format!("checkpoint of {} bytes", meta.len())));
    }
    let bytes =
        std::fs::read(path).map_err(|e| io_err(format!("reading {}", path.display()), e))?;
    Checkpoint::decode(&bytes)
        .map(Some)
        .map_err(|d| corrupt(path, d))
}

fn create_segment(log_dir: &Path, base: u64, io: &dyn FileIo) -> Result<Segment, StorageError> {
    let path = log_dir.join(segment_file_name(base));
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .map_err(|e| io_err(format!("creating {}", path.display()), e))?;
    io.write_all_at(&file, &format::segment_header(), 0)
        .map_err(|e| io_err(format!("writing {}", path.display()), e))?;
    Ok(Segment { base, file, path })
}

/// Open every segment file and check its header. A segment past the
/// checkpoint whose header is torn was being created at the crash: it and
/// every later one are dropped.
fn load_segments(
    log_dir: &Path,
    checkpoint_pos: u64,
    report: &mut RecoveryReport,
) -> Result<BTreeMap<u64, Arc<Segment>>, StorageError> {
    let mut found = BTreeMap::new();
    let rd = std::fs::read_dir(log_dir)
        .map_err(|e| io_err(format!("listing {}", log_dir.display()), e))?;
    for ent in rd {
        let ent = ent.map_err(|e| io_err(format!("listing {}", log_dir.display()), e))?;
        let name = ent.file_name();
        let Some(base) = name
            .to_str()
            .and_then(|n| n.strip_suffix(".log"))
            .filter(|n| n.len() == 20)
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        found.insert(base, ent.path());
    }
    let mut out = BTreeMap::new();
    let mut drop_rest = false;
    for (base, path) in found {
        if drop_rest {
            report.bytes_truncated += std::fs::metadata(&path).map_or(0, |m| m.len());
            std::fs::remove_file(&path)
                .map_err(|e| io_err(format!("removing {}", path.display()), e))?;
            continue;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| io_err(format!("opening {}", path.display()), e))?;
        let mut header = [0u8; SEGMENT_HEADER_BYTES as usize];
        let ok = file.read_exact_at(&mut header, 0).is_ok()
            && format::check_segment_header(&header).is_ok();
        if !ok {
            if base < checkpoint_pos {
                return Err(corrupt(&path, "bad segment header below the checkpoint"));
            }
            report.bytes_truncated += file.metadata().map_or(0, |m| m.len());
            drop(file);
            std::fs::remove_file(&path)
                .map_err(|e| io_err(format!("removing {}", path.display()), e))?;
            drop_rest = true;
            continue;
        }
        out.insert(base, Arc::new(Segment { base, file, path }));
    }
    Ok(out)
}

/// Parse `<topic-uuid>-<partition>.idx`.
pub(crate) fn parse_index_name(name: &str) -> Option<PartitionId> {
    let stem = name.strip_suffix(".idx")?;
    let (topic, partition) = stem.rsplit_once('-')?;
    Some(PartitionId {
        topic_id: uuid::Uuid::parse_str(topic).ok()?,
        partition: partition.parse().ok()?,
    })
}

/// The index file path of a partition.
pub(crate) fn index_path(index_dir: &Path, id: PartitionId) -> PathBuf {
    index_dir.join(format!("{}-{}.idx", id.topic_id.hyphenated(), id.partition))
}

/// A fresh partition state for the index file at `path` (opened when written).
pub(crate) fn new_state(path: PathBuf, config: PartitionConfig) -> PartitionState {
    PartitionState {
        config,
        leader_epoch: 0,
        entries: VecDeque::new(),
        log_start: 0,
        checkpointed_log_start: i64::MIN,
        dead_unrecorded: Vec::new(),
        log_end: 0,
        hw: 0,
        durable_end: 0,
        live_bytes: 0,
        index_path: path,
        next_slot: 0,
        index_pending: Vec::new(),
        index_pending_slot: 0,
        producers: ProducerTable::default(),
        removed: false,
        delete_retention_ms: Some(crate::compaction::DELETE_RETENTION_MS_DEFAULT),
        compacted_end: i64::MIN,
        tombstone_due_ms: i64::MAX,
    }
}

/// Load every index file, keeping only entries the checkpoint vouches for.
fn load_indexes(
    index_dir: &Path,
    checkpoint: Option<&Checkpoint>,
) -> Result<HashMap<PartitionId, PartitionState>, StorageError> {
    let vouched: HashMap<PartitionId, (i64, i64)> = checkpoint
        .map(|c| {
            c.partitions
                .iter()
                .map(|p| (p.id, (p.index_end_offset, p.log_start)))
                .collect()
        })
        .unwrap_or_default();
    let mut out = HashMap::new();
    let rd = std::fs::read_dir(index_dir)
        .map_err(|e| io_err(format!("listing {}", index_dir.display()), e))?;
    for ent in rd {
        let ent = ent.map_err(|e| io_err(format!("listing {}", index_dir.display()), e))?;
        let name = ent.file_name();
        if name
            .to_str()
            .is_some_and(|n| n.ends_with(crate::compaction::INDEX_TMP_SUFFIX))
        {
            // A compaction's new index that was never renamed into place.
            let path = ent.path();
            std::fs::remove_file(&path)
                .map_err(|e| io_err(format!("removing {}", path.display()), e))?;
            continue;
        }
        let Some(id) = name.to_str().and_then(parse_index_name) else {
            continue;
        };
        let path = ent.path();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| io_err(format!("opening {}", path.display()), e))?;
        let len = file
            .metadata()
            .map_err(|e| io_err(format!("stat {}", path.display()), e))?
            .len();
        if len > INDEX_FILE_BYTES_MAX {
            return Err(corrupt(&path, format!("index file of {len} bytes")));
        }
        if len < INDEX_HEADER_BYTES {
            // Created at the crash, before its header was written: nothing in it.
            file.set_len(0)
                .map_err(|e| io_err(format!("truncating {}", path.display()), e))?;
            file.write_all_at(&format::index_header(id), 0)
                .map_err(|e| io_err(format!("writing {}", path.display()), e))?;
        }
        let mut bytes = vec![0u8; len.max(INDEX_HEADER_BYTES) as usize];
        file.read_exact_at(&mut bytes, 0)
            .map_err(|e| io_err(format!("reading {}", path.display()), e))?;
        format::check_index_header(&bytes, id).map_err(|d| corrupt(&path, d))?;
        let (index_end, log_start) = vouched.get(&id).copied().unwrap_or((i64::MIN, 0));
        let mut st = new_state(path.clone(), PartitionConfig::default());
        st.log_start = log_start;
        let body = bytes.get(INDEX_HEADER_BYTES as usize..).unwrap_or_default();
        let mut next: Option<i64> = None;
        for (slot, chunk) in body.chunks_exact(INDEX_ENTRY_BYTES).enumerate() {
            let Some(e) = IndexEntry::decode(chunk) else {
                // Past the vouched range an entry may be torn; inside it, that is corruption.
                if next.unwrap_or(log_start) < index_end {
                    return Err(corrupt(&path, format!("index entry {slot} fails its CRC")));
                }
                break;
            };
            if e.base_offset >= index_end {
                break;
            }
            // Gaps are allowed: compaction removes whole batches.
            if next.is_some_and(|n| n > e.base_offset) {
                return Err(corrupt(
                    &path,
                    format!("index entry {slot} does not follow its predecessor"),
                ));
            }
            next = Some(e.last_offset() + 1);
            st.push_entry(e, slot as u64);
        }
        st.next_slot = st.entries.len() as u64;
        // Compaction may have removed the last batches below the vouched end;
        // the log still reaches it, so the tail scan must not re-add them.
        st.log_end = next.unwrap_or(log_start).max(log_start).max(index_end);
        let keep = INDEX_HEADER_BYTES + st.next_slot * INDEX_ENTRY_BYTES as u64;
        if keep != len {
            // Synced before the file is closed: nothing tracks it after.
            file.set_len(keep)
                .and_then(|()| file.sync_data())
                .map_err(|e| io_err(format!("truncating {}", path.display()), e))?;
        }
        out.insert(id, st);
    }
    Ok(out)
}

/// Scan entries from `from` to the end of the log, re-indexing valid ones and
/// cutting the log at the first torn or corrupt entry. Returns the log end.
fn scan_tail(
    segments: &mut BTreeMap<u64, Arc<Segment>>,
    from: u64,
    partitions: &mut HashMap<PartitionId, PartitionState>,
    io: (&dyn FileIo, &IndexFiles),
    report: &mut RecoveryReport,
) -> Result<u64, StorageError> {
    let bases: Vec<u64> = segments
        .range(..=from)
        .next_back()
        .map(|(b, _)| *b)
        .into_iter()
        .chain(segments.range(from.saturating_add(1)..).map(|(b, _)| *b))
        .collect();
    let mut body = Vec::new();
    let mut end = from;
    let mut cut = false;
    for base in bases {
        let Some(seg) = segments.get(&base).cloned() else {
            continue;
        };
        if cut {
            report.bytes_truncated += seg.file.metadata().map_or(0, |m| m.len());
            segments.remove(&base);
            std::fs::remove_file(&seg.path)
                .map_err(|e| io_err(format!("removing {}", seg.path.display()), e))?;
            continue;
        }
        if base > end && end != from {
            // A gap between segments: the earlier one was cut short. Nothing after is durable.
            cut = true;
            report.bytes_truncated += seg.file.metadata().map_or(0, |m| m.len());
            segments.remove(&base);
            std::fs::remove_file(&seg.path)
                .map_err(|e| io_err(format!("removing {}", seg.path.display()), e))?;
            continue;
        }
        let file_len = seg
            .file
            .metadata()
            .map_err(|e| io_err(format!("stat {}", seg.path.display()), e))?
            .len();
        let mut pos = from.max(base);
        loop {
            let at = seg.file_offset(pos);
            if at >= file_len {
                break;
            }
            let remaining = file_len - at;
            match read_entry(&seg, at, remaining, &mut body) {
                Some(header) => {
                    let len = (ENTRY_PREFIX_BYTES + header.body_len as usize) as u64;
                    report.bytes_scanned += len;
                    let batch = body
                        .get(ENTRY_HEADER_BYTES - ENTRY_PREFIX_BYTES..)
                        .unwrap_or_default();
                    apply_entry(header, batch, pos, partitions, io, report)?;
                    pos += len;
                }
                None => {
                    report.bytes_truncated += remaining;
                    seg.file
                        .set_len(at)
                        .map_err(|e| io_err(format!("truncating {}", seg.path.display()), e))?;
                    tracing::warn!(
                        segment = %seg.path.display(),
                        position = pos,
                        bytes = remaining,
                        "commit-log tail is torn or corrupt; cutting it"
                    );
                    cut = true;
                    break;
                }
            }
        }
        end = pos;
    }
    Ok(end)
}

/// Read and check the entry at file offset `at`; `None` when torn or corrupt.
/// `body` receives everything after the length and CRC.
fn read_entry(
    seg: &Segment,
    at: u64,
    remaining: u64,
    body: &mut Vec<u8>,
) -> Option<format::EntryHeader> {
    let mut prefix = [0u8; ENTRY_PREFIX_BYTES];
    seg.file.read_exact_at(&mut prefix, at).ok()?;
    let (body_len, crc) = format::entry_prefix(&prefix)?;
    let body_len = body_len as usize;
    let body_min = ENTRY_HEADER_BYTES - ENTRY_PREFIX_BYTES + crate::batch::BATCH_HEADER_BYTES;
    let fits = (body_min..=ENTRY_BATCH_BYTES_MAX + ENTRY_HEADER_BYTES).contains(&body_len)
        && (ENTRY_PREFIX_BYTES + body_len) as u64 <= remaining;
    if !fits {
        return None;
    }
    body.clear();
    body.resize(body_len, 0);
    seg.file
        .read_exact_at(body, at + ENTRY_PREFIX_BYTES as u64)
        .ok()?;
    if crc32c::crc32c(body) != crc {
        return None;
    }
    let mut header_bytes = [0u8; ENTRY_HEADER_BYTES];
    header_bytes[..ENTRY_PREFIX_BYTES].copy_from_slice(&prefix);
    header_bytes[ENTRY_PREFIX_BYTES..]
        .copy_from_slice(body.get(..ENTRY_HEADER_BYTES - ENTRY_PREFIX_BYTES)?);
    let header = format::decode_entry_header(&header_bytes)?;
    let batch = body.get(ENTRY_HEADER_BYTES - ENTRY_PREFIX_BYTES..)?;
    // The batch inside must agree with its own length field.
    let batch_length = format::be_i32(batch, 8)?;
    (usize::try_from(batch_length).ok()? + 12 == batch.len()).then_some(header)
}

fn apply_entry(
    header: format::EntryHeader,
    batch: &[u8],
    position: u64,
    partitions: &mut HashMap<PartitionId, PartitionState>,
    (io, index_files): (&dyn FileIo, &IndexFiles),
    report: &mut RecoveryReport,
) -> Result<(), StorageError> {
    let Some(st) = partitions.get_mut(&header.partition) else {
        return Ok(()); // a partition that no longer exists
    };
    let entry = IndexEntry {
        base_offset: header.base_offset,
        last_offset_delta: format::be_i32(batch, 23).unwrap_or(0),
        size: batch.len() as u32,
        position,
        max_timestamp: format::be_i64(batch, 35).unwrap_or(-1),
        producer_id: format::be_i64(batch, 43).unwrap_or(-1),
        producer_epoch: format::be_i16(batch, 51).unwrap_or(-1),
        attributes: format::be_i16(batch, 21).unwrap_or(0),
        base_sequence: format::be_i32(batch, 53).unwrap_or(-1),
    };
    let stored = match header.kind {
        // The atomically replaced index file decides whether a compacted copy
        // is live: before the rename the original is, after it the copy is.
        EntryKind::Compacted => return Ok(()),
        EntryKind::Batch => {
            if entry.base_offset < st.log_end {
                return Ok(()); // indexed before the checkpoint was taken
            }
            if entry.base_offset > st.log_end {
                tracing::warn!(
                    partition = ?header.partition,
                    expected = st.log_end,
                    found = entry.base_offset,
                    "offset gap in the commit log"
                );
            }
            let slot = st.next_slot;
            st.next_slot += 1;
            st.log_end = entry.last_offset() + 1;
            st.push_entry(entry, slot);
            report.index_entries_rebuilt += 1;
            (slot, entry)
        }
        EntryKind::Relocated => {
            let Some(i) = st.find(entry.base_offset) else {
                return Ok(());
            };
            let Some(e) = st.entries.get_mut(i) else {
                return Ok(());
            };
            // A relocation always copies forward to the log head; a copy behind
            // the current position is of a version compaction has replaced.
            if e.entry.base_offset != entry.base_offset
                || e.entry.size != entry.size
                || position <= e.entry.position
            {
                return Ok(());
            }
            e.entry.position = position;
            (e.slot, e.entry)
        }
    };
    let at = INDEX_HEADER_BYTES + stored.0 * INDEX_ENTRY_BYTES as u64;
    index_files.write_at(io, &st.index_path, &stored.1.encode(), at)
}
