//! Opening the log after a clean stop or a crash: load the checkpoint and
//! the index files, drop index entries past the checkpoint, then scan only
//! the commit-log tail past the checkpoint position, checking each entry's
//! CRC32C, cutting a torn or corrupt tail, and re-indexing what is valid.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use crate::error::StorageError;
use crate::format::{
    self, Checkpoint, CheckpointPartition, ENTRY_BATCH_BYTES_MAX, ENTRY_HEADER_BYTES,
    ENTRY_PREFIX_BYTES, EntryKind, FormatError, INDEX_ENTRY_BYTES, INDEX_HEADER_BYTES, IndexEntry,
    SEGMENT_HEADER_BYTES, SEGMENT_VERSION,
};
use crate::index::{Loaded, QueueIndex, slot_offset};
use crate::io::{FileIo, IndexFiles, IndexIo, durable};
use crate::log::{LogInner, LogParts, Segment, io_err, segment_file_name};
use crate::partition::{PartitionInner, PartitionState};
use crate::store::{CHECKPOINT_FILE, CHECKPOINT_TMP_FILE, Store};
use crate::{Clock, LogConfig, PartitionConfig, PartitionId, RecoveryReport};

/// The largest version-1 index file upgraded (read whole into memory once);
/// a longer one is corruption (16 M batches). Version-2 files are never read whole.
const INDEX_V1_FILE_BYTES_MAX: u64 = 1 << 30;

fn corrupt(file: &Path, detail: impl Into<String>) -> StorageError {
    StorageError::Corrupt {
        file: file.display().to_string(),
        detail: detail.into(),
    }
}

/// `ENOSPC` on Linux, the only platform Weir runs on.
const ENOSPC: i32 = 28;

/// Open (or create) the log under `dir`. A write that fails because the
/// filesystem is full becomes [`StorageError::DiskFull`], which says what
/// may be removed to make room.
pub(crate) fn open(
    dir: &Path,
    config: LogConfig,
    clock: Arc<dyn Clock>,
    io: Arc<dyn FileIo>,
) -> Result<(Arc<Store>, RecoveryReport), StorageError> {
    open_checked(dir, config, clock, io).map_err(|e| match disk_full_detail(&e) {
        Some(detail) => StorageError::DiskFull {
            dir: dir.display().to_string(),
            detail,
        },
        None => e,
    })
}

/// The failed write, when `e` is a write that found the filesystem full
/// (directly, or through the poisoning of the log it caused).
fn disk_full_detail(e: &StorageError) -> Option<String> {
    let full = match e {
        StorageError::Io { source, .. } => {
            source.raw_os_error() == Some(ENOSPC)
                || source.kind() == std::io::ErrorKind::StorageFull
        }
        StorageError::Poisoned { reason } => {
            reason.contains(&std::io::Error::from_raw_os_error(ENOSPC).to_string())
        }
        _ => false,
    };
    full.then(|| match e {
        StorageError::Poisoned { reason } => reason.to_string(),
        other => other.to_string(),
    })
}

/// [`open`], before a full disk is named as such.
///
/// Recovery first reads and checks, then changes files. Every check that can
/// refuse the data directory because a newer Weir wrote it (file versions,
/// entry kinds in the tail) runs before the first file is truncated,
/// rewritten or deleted, so a refused directory is left byte-for-byte as it was.
fn open_checked(
    dir: &Path,
    config: LogConfig,
    clock: Arc<dyn Clock>,
    io: Arc<dyn FileIo>,
) -> Result<(Arc<Store>, RecoveryReport), StorageError> {
    let started = Instant::now();
    let log_dir = dir.join("log");
    let index_dir = dir.join("index");
    let txn_dir = dir.join(crate::aborted::TXN_INDEX_DIR);
    let snapshot_dir = dir.join(crate::snapshots::SNAPSHOT_DIR);
    for d in [dir, &log_dir, &index_dir, &txn_dir, &snapshot_dir] {
        io.create_dir_all(d)
            .map_err(|e| io_err(format!("creating {}", d.display()), e))?;
    }
    let mut report = RecoveryReport::default();

    // Read-only checks.
    let checkpoint = load_checkpoint(&dir.join(CHECKPOINT_FILE), io.as_ref())?;
    let checkpoint_pos = checkpoint.as_ref().map_or(0, |c| c.position);
    let (mut segments, torn_headers) = open_segments(&log_dir, checkpoint_pos, io.as_ref())?;
    let index_probes = probe_indexes(&index_dir, io.as_ref())?;
    let probed_ms = started.elapsed().as_millis();
    let stored_epochs = crate::epochs::load(dir, io.as_ref())?;
    crate::aborted::check_versions(dir, io.as_ref())?;
    crate::snapshots::check_versions(dir, io.as_ref())?;
    let first_base = segments.keys().next().copied();
    // Scan the tail past the checkpoint (the whole log when there is none).
    let scan_from = checkpoint_pos.max(first_base.unwrap_or(0));
    walk_tail(&segments, scan_from, io.as_ref(), &mut |_, _, _| Ok(()))?;

    // From here on recovery changes files.
    for tmp in [CHECKPOINT_TMP_FILE, crate::reclaim::LOG_STARTS_TMP_FILE] {
        let _ = io.remove_file(&dir.join(tmp));
    }
    remove_torn_segments(&torn_headers, &mut report, io.as_ref())?;
    if segments.is_empty() {
        let seg = create_segment(&log_dir, checkpoint_pos, io.as_ref())?;
        segments.insert(checkpoint_pos, seg);
    }
    let first_base = first_base.unwrap_or(checkpoint_pos);

    let index_files = IndexFiles::new(config.index_open_files_max);
    let ix = IndexIo {
        files: &index_files,
        io: io.as_ref(),
    };
    let bases: Vec<u64> = segments.keys().copied().collect();
    let mut partitions = load_indexes(
        &index_dir,
        dir,
        index_probes,
        checkpoint.as_ref(),
        &bases,
        ix,
    )?;
    load_transactions(dir, &mut partitions, checkpoint.as_ref(), ix)?;
    let loaded_ms = started.elapsed().as_millis();
    report.partitions = partitions.len();
    // A few entries per partition while recovery re-indexes the tail; the
    // log shares out the real budget once it runs.
    let hot_max = crate::index::HOT_ENTRIES_MIN;
    let write_pos = scan_tail(
        &mut segments,
        scan_from,
        &mut partitions,
        (ix, hot_max),
        &mut report,
    )?;
    roll_if_older_version(&mut segments, &log_dir, write_pos, io.as_ref())?;

    let registry = finish_partitions(partitions, first_base, ix)?;
    crate::epochs::attach(&registry, stored_epochs)?;
    sync_kept_tail(&segments, scan_from, &log_dir, io.as_ref())?;
    // Rebuilding producer state may have made aborted-transaction files
    // (aborts the tail scan found): the open's checkpoint vouches for them.
    durable::sync_dir(io.as_ref(), "storage::txn_index_dir_sync", &txn_dir)
        .map_err(|e| io_err(format!("fsync of {}", txn_dir.display()), e))?;
    let recovered_ms = started.elapsed().as_millis();

    let segments: BTreeMap<u64, Arc<Segment>> = segments
        .into_iter()
        .map(|(base, s)| (base, s.segment))
        .collect();
    let active = segments
        .values()
        .next_back()
        .cloned()
        .ok_or_else(|| corrupt(&log_dir, "no segment after recovery"))?;
    let log = Arc::new(LogInner::new(LogParts {
        dir: dir.to_path_buf(),
        config,
        clock,
        io,
        segments,
        active,
        write_pos,
    }));
    let built_ms = started.elapsed().as_millis();
    let inner = Arc::new(Store::new(log, registry, index_files));
    inner.write_checkpoint()?;
    inner.start()?;
    report.elapsed_ms = started.elapsed().as_millis() as u64;
    // Where an open's time went, for a broker with many partitions.
    tracing::debug!(
        probed_ms,
        loaded_ms,
        recovered_ms,
        built_ms,
        checkpointed_ms = report.elapsed_ms,
        "commit log open phases (time since the open began)"
    );
    if report.bytes_truncated > 0 {
        tracing::warn!(
            bytes = report.bytes_truncated,
            "cut a torn or corrupt commit-log tail (writes that were never acknowledged as durable)"
        );
    }
    tracing::info!(?report, "commit log opened");
    Ok((inner, report))
}

/// Open each partition's aborted transactions and producer-state snapshots,
/// keeping what the checkpoint vouched for: aborts whose marker lies below
/// the partition's index end offset, and snapshots at or below it (the
/// tail scan files the later aborts again, and the newest snapshot kept is
/// where producer state is rebuilt from). Later snapshots, and the files of
/// partitions that no longer exist, are removed.
fn load_transactions(
    dir: &Path,
    partitions: &mut HashMap<PartitionId, PartitionState>,
    checkpoint: Option<&Checkpoint>,
    ix: IndexIo<'_>,
) -> Result<(), StorageError> {
    let vouched: HashMap<PartitionId, i64> = checkpoint
        .map(|c| {
            c.partitions
                .iter()
                .map(|p| (p.id, p.index_end_offset))
                .collect()
        })
        .unwrap_or_default();
    let mut on_disk = crate::snapshots::list(dir, ix.io)?;
    let mut removed = false;
    for (id, st) in partitions.iter_mut() {
        let end = vouched.get(id).copied().unwrap_or(i64::MIN);
        let mut kept = on_disk.remove(id).unwrap_or_default();
        for past in kept.split_off(&end.saturating_add(1)) {
            crate::snapshots::remove(ix.io, &crate::snapshots::path(dir, *id, past))?;
            removed = true;
        }
        let aborted = crate::aborted::AbortedIndex::load(
            crate::aborted::txn_index_path(dir, *id),
            *id,
            end,
            ix,
        )?;
        st.load_transactions(aborted, kept);
    }
    for (id, offsets) in on_disk {
        for at in offsets {
            crate::snapshots::remove(ix.io, &crate::snapshots::path(dir, id, at))?;
            removed = true;
        }
    }
    if removed {
        crate::snapshots::sync_folder(dir, ix.io)?;
    }
    let live: std::collections::HashSet<String> = partitions
        .keys()
        .map(|id| format!("{}-{}", id.topic_id.hyphenated(), id.partition))
        .collect();
    crate::aborted::remove_orphans(dir, &|stem| live.contains(stem), ix.io)
}

/// Finish each partition: forget batches that lay in deleted segments (below
/// `first_base`), set its offsets from what recovery kept, rebuild producers.
fn finish_partitions(
    partitions: HashMap<PartitionId, PartitionState>,
    first_base: u64,
    ix: IndexIo<'_>,
) -> Result<HashMap<PartitionId, Arc<PartitionInner>>, StorageError> {
    let mut registry = HashMap::new();
    for (id, mut st) in partitions {
        st.finish_recovery(first_base, ix)?;
        registry.insert(id, Arc::new(PartitionInner::new(id, st)));
    }
    Ok(registry)
}

/// Make what recovery kept durable before anything is acknowledged on top of
/// it: every segment from the one the scan started in, and the log directory.
fn sync_kept_tail(
    segments: &BTreeMap<u64, OpenSegment>,
    scan_from: u64,
    log_dir: &Path,
    io: &dyn FileIo,
) -> Result<(), StorageError> {
    let scan_segment = segments
        .range(..=scan_from)
        .next_back()
        .map_or(0, |(b, _)| *b);
    for seg in segments.range(scan_segment..).map(|(_, s)| &s.segment) {
        durable::sync_data(io, "storage::recovery_segment_sync", &seg.file)
            .map_err(|e| io_err(format!("fdatasync of {}", seg.path.display()), e))?;
    }
    durable::sync_dir(io, "storage::recovery_log_dir_sync", log_dir)
        .map_err(|e| io_err(format!("fsync of {}", log_dir.display()), e))
}

/// A refusal of data written by a newer Weir.
fn unsupported(file: &Path, detail: impl Into<String>) -> StorageError {
    StorageError::UnsupportedFormat {
        file: file.display().to_string(),
        detail: detail.into(),
    }
}

/// A header or checkpoint refusal, as the storage error it is.
fn format_err(file: &Path, e: FormatError) -> StorageError {
    match e {
        FormatError::Corrupt(d) => corrupt(file, d),
        FormatError::Unsupported(d) => unsupported(file, d),
    }
}

pub(crate) fn load_checkpoint(
    path: &Path,
    io: &dyn FileIo,
) -> Result<Option<Checkpoint>, StorageError> {
    let meta = match io.metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(format!("reading {}", path.display()), e)),
    };
    if meta.len() > format::CHECKPOINT_BYTES_MAX {
        return Err(corrupt(path, format!("checkpoint of {} bytes", meta.len())));
    }
    let bytes = io
        .read(path)
        .map_err(|e| io_err(format!("reading {}", path.display()), e))?;
    Checkpoint::decode(&bytes)
        .map(Some)
        .map_err(|e| format_err(path, e))
}

fn create_segment(log_dir: &Path, base: u64, io: &dyn FileIo) -> Result<OpenSegment, StorageError> {
    let path = log_dir.join(segment_file_name(base));
    let file = crate::log::create_segment_file(io, &path)
        .map_err(|e| io_err(format!("creating {}", path.display()), e))?;
    Ok(OpenSegment {
        segment: Arc::new(Segment { base, file, path }),
        version: SEGMENT_VERSION,
    })
}

/// A segment file opened by recovery, with the format version of its header.
struct OpenSegment {
    segment: Arc<Segment>,
    version: u32,
}

/// Segment files whose header is torn, and every later one: they were being
/// created at the crash (or follow one that was), so nothing in them was
/// ever acknowledged.
struct TornHeaders(Vec<PathBuf>);

/// Open every segment file and check its header, changing nothing. A header
/// of a version this build does not read refuses the directory. A segment
/// past the checkpoint whose header is torn (short, or not our magic) was
/// being created at the crash: it and every later one are returned to be
/// removed; below the checkpoint that would be lost data, and is corruption.
fn open_segments(
    log_dir: &Path,
    checkpoint_pos: u64,
    io: &dyn FileIo,
) -> Result<(BTreeMap<u64, OpenSegment>, TornHeaders), StorageError> {
    let mut found = BTreeMap::new();
    let rd = io
        .read_dir(log_dir)
        .map_err(|e| io_err(format!("listing {}", log_dir.display()), e))?;
    for path in rd {
        let Some(base) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".log"))
            .filter(|n| n.len() == 20)
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        found.insert(base, path);
    }
    let mut out = BTreeMap::new();
    let mut torn = Vec::new();
    for (base, path) in found {
        if !torn.is_empty() {
            torn.push(path);
            continue;
        }
        let file = io
            .open(&path, OpenOptions::new().read(true).write(true))
            .map_err(|e| io_err(format!("opening {}", path.display()), e))?;
        let mut header = [0u8; SEGMENT_HEADER_BYTES as usize];
        let checked = match io.read_exact_at(&file, &mut header, 0) {
            Ok(()) => format::check_segment_header(&header),
            Err(_) => Err(FormatError::Corrupt("short segment header".into())),
        };
        match checked {
            Ok(version) => {
                let segment = Arc::new(Segment { base, file, path });
                out.insert(base, OpenSegment { segment, version });
            }
            Err(FormatError::Unsupported(d)) => return Err(unsupported(&path, d)),
            Err(FormatError::Corrupt(d)) if base < checkpoint_pos => {
                return Err(corrupt(&path, format!("{d}, below the checkpoint")));
            }
            Err(FormatError::Corrupt(_)) => torn.push(path),
        }
    }
    // A later segment with a newer header must refuse the directory even
    // though it lies past a torn one (a newer Weir wrote it; it is not ours to delete).
    for path in torn.iter().skip(1) {
        let mut header = [0u8; SEGMENT_HEADER_BYTES as usize];
        let read = io
            .open(path, OpenOptions::new().read(true))
            .and_then(|f| io.read_exact_at(&f, &mut header, 0));
        if let (Ok(()), Err(FormatError::Unsupported(d))) =
            (read, format::check_segment_header(&header))
        {
            return Err(unsupported(path, d));
        }
    }
    Ok((out, TornHeaders(torn)))
}

fn remove_torn_segments(
    torn: &TornHeaders,
    report: &mut RecoveryReport,
    io: &dyn FileIo,
) -> Result<(), StorageError> {
    for path in &torn.0 {
        report.bytes_truncated += io.metadata(path).map_or(0, |m| m.len());
        io.remove_file(path)
            .map_err(|e| io_err(format!("removing {}", path.display()), e))?;
        tracing::warn!(segment = %path.display(), "removed a segment created at the crash (torn header)");
    }
    Ok(())
}

/// An index file as the read-only first pass found it.
struct IndexProbe {
    id: PartitionId,
    path: PathBuf,
    len: u64,
    /// The header, when the file is long enough to hold one.
    header: Option<[u8; INDEX_HEADER_BYTES as usize]>,
}

/// What the index folder holds, read without changing anything.
#[derive(Default)]
struct IndexProbes {
    files: Vec<IndexProbe>,
    /// A compaction's new index (or an upgrade) never renamed into place.
    leftovers: Vec<PathBuf>,
}

/// The most threads [`probe_indexes`] reads headers on: an open of a broker
/// with many partitions is one open, fstat and header read per partition,
/// and the kernel's path lookups scale with cores.
const PROBE_THREADS_MAX: usize = 8;
/// Fewer index files than this are probed on the calling thread.
const PROBE_FILES_PER_THREAD_MIN: usize = 4096;

/// Read each index file's length and header, and refuse the directory if
/// any has a version this build does not read. Changes nothing: a file too
/// short for a header was being created at the crash and is repaired later
/// by [`load_indexes`], which uses what this read instead of reading it again.
fn probe_indexes(index_dir: &Path, io: &dyn FileIo) -> Result<IndexProbes, StorageError> {
    let mut out = IndexProbes::default();
    let mut named = Vec::new();
    let rd = io
        .read_dir(index_dir)
        .map_err(|e| io_err(format!("listing {}", index_dir.display()), e))?;
    for path in rd {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if name.ends_with(crate::compaction::INDEX_TMP_SUFFIX) || name.ends_with(".idx.v1-upgrade")
        {
            out.leftovers.push(path);
            continue;
        }
        if let Some(id) = parse_index_name(name) {
            named.push((id, path));
        }
    }
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(PROBE_THREADS_MAX)
        .min(named.len() / PROBE_FILES_PER_THREAD_MIN)
        .max(1);
    let chunk = named.len().div_ceil(threads).max(1);
    let probed: Vec<Result<Vec<IndexProbe>, StorageError>> = std::thread::scope(|s| {
        let workers: Vec<_> = named
            .chunks(chunk)
            .map(|part| s.spawn(move || part.iter().map(|p| probe_index(io, p)).collect()))
            .collect();
        workers
            .into_iter()
            // A panic here is a bug, not bad data: it goes on as it would
            // have on the calling thread.
            .map(|w| w.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    for part in probed {
        out.files.extend(part?);
    }
    Ok(out)
}

/// An index file opened for reading and writing.
fn open_rw(io: &dyn FileIo, path: &Path) -> Result<File, StorageError> {
    io.open(path, OpenOptions::new().read(true).write(true))
        .map_err(|e| io_err(format!("opening {}", path.display()), e))
}

/// One index file's length and header (see [`probe_indexes`]).
fn probe_index(
    io: &dyn FileIo,
    (id, path): &(PartitionId, PathBuf),
) -> Result<IndexProbe, StorageError> {
    let file = io
        .open(path, OpenOptions::new().read(true))
        .map_err(|e| io_err(format!("opening {}", path.display()), e))?;
    let len = io
        .len(&file)
        .map_err(|e| io_err(format!("stat {}", path.display()), e))?;
    let mut header = None;
    if len >= INDEX_HEADER_BYTES {
        let mut bytes = [0u8; INDEX_HEADER_BYTES as usize];
        io.read_exact_at(&file, &mut bytes, 0)
            .map_err(|e| io_err(format!("reading {}", path.display()), e))?;
        if let Err(FormatError::Unsupported(d)) = format::check_index_version(&bytes) {
            return Err(unsupported(path, d));
        }
        header = Some(bytes);
    }
    Ok(IndexProbe {
        id: *id,
        path: path.clone(),
        len,
        header,
    })
}

/// A log whose newest segment is of an older version is continued in a new
/// segment of the current version, so a segment only ever holds the entry
/// kinds its header's version allows.
fn roll_if_older_version(
    segments: &mut BTreeMap<u64, OpenSegment>,
    log_dir: &Path,
    write_pos: u64,
    io: &dyn FileIo,
) -> Result<(), StorageError> {
    let Some((&base, last)) = segments.iter().next_back() else {
        return Ok(());
    };
    if last.version == SEGMENT_VERSION {
        return Ok(());
    }
    assert!(
        write_pos >= base,
        "log end {write_pos} before the last segment {base}"
    );
    // An empty old segment is replaced in place (same base, same name).
    let seg = create_segment(log_dir, write_pos, io)?;
    segments.insert(write_pos, seg);
    Ok(())
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

/// The entry at `slot` of an index file of `version`, `None` when it is
/// short or fails its CRC.
fn read_slot(io: &dyn FileIo, file: &File, slot: u64, version: u32) -> Option<IndexEntry> {
    let mut buf = [0u8; INDEX_ENTRY_BYTES];
    io.read_exact_at(file, &mut buf, slot_offset(slot)).ok()?;
    IndexEntry::decode_in(&buf, version)
}

/// How many leading entries of an index file of `version` holding `count`
/// entries the checkpoint vouches for (those below `index_end`). The
/// vouched entries are a prefix, each valid; past them an entry may be
/// torn. An invalid entry while the one before it ends below `index_end`
/// lies inside the vouched range: corruption.
fn vouched_entries(
    io: &dyn FileIo,
    file: &File,
    path: &Path,
    count: u64,
    version: u32,
    index_end: i64,
    log_start: i64,
) -> Result<u64, StorageError> {
    let vouched = |slot| read_slot(io, file, slot, version).filter(|e| e.base_offset < index_end);
    let (mut lo, mut hi) = (0u64, count);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if vouched(mid).is_some() {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    if lo < count && read_slot(io, file, lo, version).is_none() {
        let before_end = match lo.checked_sub(1) {
            Some(prev) => vouched(prev).map_or(log_start, |e| e.last_offset() + 1),
            None => log_start,
        };
        if before_end < index_end {
            return Err(corrupt(path, format!("index entry {lo} fails its CRC")));
        }
    }
    Ok(lo)
}

/// Rewrite a version-1 index file in the current version (entries gain
/// their running maximum timestamp), keeping the first `keep` entries; the new file is
/// synced and renamed over the old one. Version-1 files are at most
/// [`INDEX_V1_FILE_BYTES_MAX`] long.
fn upgrade_v1_index(
    file: &File,
    path: &Path,
    id: PartitionId,
    keep: u64,
    io: &dyn FileIo,
) -> Result<(), StorageError> {
    let mut bytes = vec![0u8; (keep as usize) * INDEX_ENTRY_BYTES];
    io.read_exact_at(file, &mut bytes, INDEX_HEADER_BYTES)
        .map_err(|e| io_err(format!("reading {}", path.display()), e))?;
    let mut out = Vec::with_capacity(INDEX_HEADER_BYTES as usize + bytes.len());
    out.extend_from_slice(&format::index_header(id));
    let mut running = i64::MIN;
    for (slot, chunk) in bytes.chunks_exact(INDEX_ENTRY_BYTES).enumerate() {
        let mut e = IndexEntry::decode_in(chunk, 1)
            .ok_or_else(|| corrupt(path, format!("index entry {slot} fails its CRC")))?;
        running = running.max(e.max_timestamp);
        e.running_max_ts = running;
        out.extend_from_slice(&e.encode());
    }
    let tmp = path.with_extension("idx.v1-upgrade");
    let f = io
        .open(
            &tmp,
            OpenOptions::new().write(true).create(true).truncate(true),
        )
        .map_err(|e| io_err(format!("creating {}", tmp.display()), e))?;
    io.write_all_at(&f, &out, 0)
        .and_then(|()| durable::sync_data(io, "storage::index_upgrade_sync", &f))
        .and_then(|()| durable::rename(io, "storage::index_upgrade_rename", &tmp, path))
        .map_err(|e| {
            io_err(
                format!(
                    "upgrading {} to index version {}",
                    path.display(),
                    format::INDEX_VERSION
                ),
                e,
            )
        })?;
    tracing::info!(index = %path.display(), entries = keep, "upgraded a version-1 index file");
    Ok(())
}

/// Raise a version-2 index file's header to the current version, whose
/// layout is the same (see [`format::INDEX_VERSION`]): from now on this
/// build may write delay marks into it, which a build that reads only
/// version 2 would not honour. Four bytes in the first sector, synced; a
/// crash leaves either version, and both read the same.
fn raise_index_version(file: &File, path: &Path, io: &dyn FileIo) -> Result<(), StorageError> {
    io.write_all_at(file, &format::INDEX_VERSION.to_be_bytes(), 8)
        .and_then(|()| durable::sync_data(io, "storage::index_version_sync", file))
        .map_err(|e| {
            io_err(
                format!(
                    "raising {} to index version {}",
                    path.display(),
                    format::INDEX_VERSION
                ),
                e,
            )
        })?;
    tracing::info!(index = %path.display(), version = format::INDEX_VERSION, "raised an index file's version");
    Ok(())
}

/// Load every index file, keeping only entries the checkpoint vouches for.
/// Only the ends of each file are read (binary searches), so an open costs
/// a few reads per partition whatever the retained data; a partition the
/// checkpoint gives no totals for (a version-1 checkpoint) is read whole once.
fn load_indexes(
    index_dir: &Path,
    data_dir: &Path,
    probes: IndexProbes,
    checkpoint: Option<&Checkpoint>,
    segment_bases: &[u64],
    ix: IndexIo<'_>,
) -> Result<HashMap<PartitionId, PartitionState>, StorageError> {
    let vouched: HashMap<PartitionId, &CheckpointPartition> = checkpoint
        .map(|c| c.partitions.iter().map(|p| (p.id, p)).collect())
        .unwrap_or_default();
    let mut out = HashMap::with_capacity(probes.files.len());
    let mut upgraded = false;
    let io = ix.io;
    for path in &probes.leftovers {
        // A compaction's new index (or an upgrade) never renamed into place.
        io.remove_file(path)
            .map_err(|e| io_err(format!("removing {}", path.display()), e))?;
    }
    for probe in probes.files {
        let IndexProbe {
            id,
            path,
            mut len,
            header,
        } = probe;
        let cp = vouched.get(&id);
        // Opened only when its entries must be read or it must be repaired:
        // a file holding just a current header (an empty partition) is not
        // opened again.
        let mut opened: Option<File> = None;
        let checked = match &header {
            Some(h) => format::check_index_header(h, id),
            // Created at the crash, before its header was written: nothing in it.
            None => Err(FormatError::Corrupt("short index header".into())),
        };
        let version = match checked {
            Ok(v) => v,
            // A partition is created without an fdatasync of its header;
            // the first fdatasync of its file comes with its first vouched
            // entries. While no checkpoint vouches for any entry of it
            // (none names it, or its index end is its log start), nothing
            // in the file is owed, so a damaged or missing header is
            // rewritten (a newer version still refuses). The open's
            // checkpoint will name it, and a vouched file with a bad header
            // is refused: the new header is synced first.
            Err(FormatError::Corrupt(_))
                if header.is_none() || cp.is_none_or(|c| c.index_end_offset <= c.log_start) =>
            {
                let file = open_rw(io, &path)?;
                io.set_len(&file, 0)
                    .and_then(|()| io.write_all_at(&file, &format::index_header(id), 0))
                    .and_then(|()| durable::sync_data(io, "storage::index_header_sync", &file))
                    .map_err(|e| io_err(format!("rewriting {}", path.display()), e))?;
                opened = Some(file);
                len = INDEX_HEADER_BYTES;
                format::INDEX_VERSION
            }
            Err(e) => return Err(format_err(&path, e)),
        };
        if version == 1 && len > INDEX_V1_FILE_BYTES_MAX {
            return Err(corrupt(&path, format!("index file of {len} bytes")));
        }
        let (index_end, log_start) =
            cp.map_or((i64::MIN, 0), |c| (c.index_end_offset, c.log_start));
        let count = (len - INDEX_HEADER_BYTES) / INDEX_ENTRY_BYTES as u64;
        let keep = if count == 0 && len == INDEX_HEADER_BYTES && version == format::INDEX_VERSION {
            0
        } else {
            let file = match opened.take() {
                Some(f) => f,
                None => open_rw(io, &path)?,
            };
            let keep = vouched_entries(io, &file, &path, count, version, index_end, log_start)?;
            if version == 1 {
                upgrade_v1_index(&file, &path, id, keep, ix.io)?;
                upgraded = true;
            } else if slot_offset(keep) != len {
                // Synced before the file is closed: nothing tracks it after.
                io.set_len(&file, slot_offset(keep))
                    .and_then(|()| durable::sync_data(io, "storage::recovery_index_sync", &file))
                    .map_err(|e| io_err(format!("truncating {}", path.display()), e))?;
            }
            if version == 2 {
                raise_index_version(&file, &path, io)?;
            }
            keep
        };
        let summary = cp.and_then(|c| c.summary.clone());
        let known = summary.is_some() || cp.is_none();
        let mut st = PartitionState::new(id, data_dir, PartitionConfig::default());
        let index = QueueIndex::loaded(
            path,
            Loaded {
                first_slot: 0,
                next_slot: keep,
                last_running_max: i64::MIN,
                dead_max_ts: i64::MIN,
                summary: summary.unwrap_or_default(),
            },
        );
        st.load_index(index, log_start);
        let last = st.index_mut().finish_load(log_start, ix)?;
        if !known {
            st.index_mut().rebuild_summary(ix, |position| {
                let i = segment_bases.partition_point(|b| *b <= position);
                i.checked_sub(1).and_then(|i| segment_bases.get(i)).copied()
            })?;
        }
        // Compaction may have removed the last batches below the vouched end;
        // the log still reaches it, so the tail scan must not re-add them.
        st.set_recovered_end(
            last.map_or(log_start, |e| e.last_offset() + 1)
                .max(log_start)
                .max(index_end),
        );
        out.insert(id, st);
    }
    if upgraded {
        durable::sync_dir(io, "storage::index_upgrade_dir_sync", index_dir)
            .map_err(|e| io_err(format!("fsync of {}", index_dir.display()), e))?;
    }
    Ok(out)
}

/// Where a walk of the log tail stopped, and what lies past that point.
#[derive(Debug, Default)]
struct TailEnd {
    /// Position just past the last valid entry: the log end after recovery.
    end: u64,
    /// The first torn or corrupt entry, as (segment base, position).
    torn_at: Option<(u64, u64)>,
    /// Segments that lie wholly past a tear or a hole.
    dropped: Vec<u64>,
}

/// What a tail walk does with each valid entry: (header, batch bytes, position).
type VisitEntry<'a> = dyn FnMut(format::EntryHeader, &[u8], u64) -> Result<(), StorageError> + 'a;

/// Walk the entries from position `from` to the end of the log, handing
/// each valid one to `visit` (header, batch bytes, position), and return
/// where the valid log ends. Reads only; [`scan_tail`] acts on the result.
///
/// The log stays valid only while it is contiguous. An entry that is torn or
/// fails its CRC ends it. So does a hole: every segment after the first one
/// walked must start exactly where the walk of the previous one ended. A
/// segment that starts later follows a segment whose tail was lost, and
/// nothing past that loss was ever acknowledged: a sync round fdatasyncs the
/// rolled segments and then the active one, in log order, and durable waits
/// are answered only when the whole round succeeded. So when an earlier
/// segment's unsynced tail is missing, no round that covered the later
/// segment completed, even if some of its pages reached the disk on their
/// own. (Partitions with a relaxed `flush.messages` are answered before any
/// fsync by their own choice; their unsynced writes may be lost in any case.)
/// Re-indexing such a later segment would leave an offset gap and bring back
/// batches that were never acknowledged, so it is dropped with everything after.
///
/// A CRC-valid entry of a kind its segment's version does not allow was
/// written by a newer Weir: that refuses the directory, as does a log that
/// ends before the checkpoint position or segments that overlap, because
/// cutting there could only destroy data that was acknowledged.
fn walk_tail(
    segments: &BTreeMap<u64, OpenSegment>,
    from: u64,
    io: &dyn FileIo,
    visit: &mut VisitEntry<'_>,
) -> Result<TailEnd, StorageError> {
    let first = segments.range(..=from).next_back().map(|(b, _)| *b);
    let mut tail = TailEnd {
        end: from,
        ..TailEnd::default()
    };
    let mut body = Vec::new();
    for (&base, open) in segments.range(first.unwrap_or(from)..) {
        let seg = &open.segment;
        if tail.torn_at.is_some() || !tail.dropped.is_empty() {
            tail.dropped.push(base);
            continue;
        }
        let start = if Some(base) == first { from } else { base };
        if Some(base) != first {
            if base > tail.end {
                tracing::warn!(
                    segment = %seg.path.display(),
                    expected = tail.end,
                    "the previous segment ends before this one starts (its unsynced tail was lost); \
                     dropping this and every later segment"
                );
                tail.dropped.push(base);
                continue;
            }
            if base < tail.end {
                return Err(corrupt(
                    &seg.path,
                    format!(
                        "segment starts at {base}, inside the previous one (it ends at {})",
                        tail.end
                    ),
                ));
            }
        }
        let file_len = io
            .len(&seg.file)
            .map_err(|e| io_err(format!("stat {}", seg.path.display()), e))?;
        if seg.file_offset(start) > file_len {
            return Err(corrupt(
                &seg.path,
                format!(
                    "the segment ends before the checkpoint position {start}: durable data is missing"
                ),
            ));
        }
        let mut pos = start;
        while seg.file_offset(pos) < file_len {
            let at = seg.file_offset(pos);
            match read_entry(io, seg, open.version, at, file_len - at, &mut body) {
                EntryRead::Valid(header) => {
                    let batch = body
                        .get(ENTRY_HEADER_BYTES - ENTRY_PREFIX_BYTES..)
                        .unwrap_or_default();
                    visit(header, batch, pos)?;
                    pos += (ENTRY_PREFIX_BYTES + header.body_len as usize) as u64;
                }
                EntryRead::UnknownKind(kind) => {
                    return Err(unsupported(
                        &seg.path,
                        format!(
                            "entry at position {pos} (file offset {at}) has kind {kind}, which a \
                             version-{} segment may not hold in this build",
                            open.version
                        ),
                    ));
                }
                EntryRead::Torn => {
                    tail.torn_at = Some((base, pos));
                    break;
                }
            }
        }
        tail.end = pos;
    }
    Ok(tail)
}

/// Re-index the valid entries from `from` to the end of the log, cut the log
/// at the first torn or corrupt entry and remove the segments past a tear or
/// a hole (see [`walk_tail`]). Returns the log end.
fn scan_tail(
    segments: &mut BTreeMap<u64, OpenSegment>,
    from: u64,
    partitions: &mut HashMap<PartitionId, PartitionState>,
    (ix, hot_max): (IndexIo<'_>, usize),
    report: &mut RecoveryReport,
) -> Result<u64, StorageError> {
    let bases: Vec<u64> = segments.keys().copied().collect();
    let tail = walk_tail(segments, from, ix.io, &mut |header, batch, position| {
        report.bytes_scanned += (ENTRY_PREFIX_BYTES + header.body_len as usize) as u64;
        let i = bases.partition_point(|b| *b <= position);
        let segment = i
            .checked_sub(1)
            .and_then(|i| bases.get(i))
            .copied()
            .unwrap_or(0);
        let at = Located { position, segment };
        apply_entry(header, batch, at, partitions, (ix, hot_max), report)
    })?;
    if let Some((base, position)) = tail.torn_at
        && let Some(open) = segments.get(&base)
    {
        let seg = &open.segment;
        let at = seg.file_offset(position);
        let len = ix
            .io
            .len(&seg.file)
            .map_err(|e| io_err(format!("stat {}", seg.path.display()), e))?;
        report.bytes_truncated += len.saturating_sub(at);
        ix.io
            .set_len(&seg.file, at)
            .map_err(|e| io_err(format!("truncating {}", seg.path.display()), e))?;
        tracing::warn!(
            segment = %seg.path.display(),
            position,
            bytes = len.saturating_sub(at),
            "commit-log tail is torn or corrupt; cutting it"
        );
    }
    for base in &tail.dropped {
        let Some(open) = segments.remove(base) else {
            continue;
        };
        let seg = &open.segment;
        report.bytes_truncated += ix.io.len(&seg.file).unwrap_or(0);
        ix.io
            .remove_file(&seg.path)
            .map_err(|e| io_err(format!("removing {}", seg.path.display()), e))?;
    }
    Ok(tail.end)
}

/// What [`read_entry`] found at a file offset.
enum EntryRead {
    /// A whole entry of a known kind whose CRC and batch length check out.
    Valid(format::EntryHeader),
    /// A CRC-valid entry of a kind this build does not know.
    UnknownKind(u8),
    /// Torn or corrupt: the length does not fit, the CRC fails, or the batch
    /// inside disagrees with its own length.
    Torn,
}

/// Read and check the entry at file offset `at` of a segment of `version`.
/// `body` receives everything after the length and CRC.
///
/// The CRC covers the kind byte, so the kind is looked at only once the CRC
/// holds: a torn entry stays a torn tail whatever its kind byte reads, and
/// only a whole, intact entry can be reported as of an unknown kind.
fn read_entry(
    io: &dyn FileIo,
    seg: &Segment,
    version: u32,
    at: u64,
    remaining: u64,
    body: &mut Vec<u8>,
) -> EntryRead {
    let mut prefix = [0u8; ENTRY_PREFIX_BYTES];
    if io.read_exact_at(&seg.file, &mut prefix, at).is_err() {
        return EntryRead::Torn;
    }
    let Some((body_len, crc)) = format::entry_prefix(&prefix) else {
        return EntryRead::Torn;
    };
    let body_len = body_len as usize;
    // Every kind starts with the rest of the entry header; kinds differ after it.
    let body_min = ENTRY_HEADER_BYTES - ENTRY_PREFIX_BYTES;
    let fits = (body_min..=ENTRY_BATCH_BYTES_MAX + ENTRY_HEADER_BYTES).contains(&body_len)
        && (ENTRY_PREFIX_BYTES + body_len) as u64 <= remaining;
    if !fits {
        return EntryRead::Torn;
    }
    body.clear();
    body.resize(body_len, 0);
    if io
        .read_exact_at(&seg.file, body, at + ENTRY_PREFIX_BYTES as u64)
        .is_err()
        || crc32c::crc32c(body) != crc
    {
        return EntryRead::Torn;
    }
    let kind = body.first().copied().unwrap_or(0);
    if EntryKind::in_segment(version, kind).is_none() {
        return EntryRead::UnknownKind(kind);
    }
    match check_batch_entry(&prefix, body, version) {
        Some(header) => EntryRead::Valid(header),
        None => EntryRead::Torn,
    }
}

/// Decode the header of a CRC-valid entry of a known kind and check that the
/// batch inside agrees with its own length field.
fn check_batch_entry(
    prefix: &[u8; ENTRY_PREFIX_BYTES],
    body: &[u8],
    version: u32,
) -> Option<format::EntryHeader> {
    let mut header_bytes = [0u8; ENTRY_HEADER_BYTES];
    header_bytes[..ENTRY_PREFIX_BYTES].copy_from_slice(prefix);
    header_bytes[ENTRY_PREFIX_BYTES..]
        .copy_from_slice(body.get(..ENTRY_HEADER_BYTES - ENTRY_PREFIX_BYTES)?);
    let header = format::decode_entry_header_in(&header_bytes, version)?;
    let batch = body.get(ENTRY_HEADER_BYTES - ENTRY_PREFIX_BYTES..)?;
    if header.kind == EntryKind::Truncation {
        return batch.is_empty().then_some(header);
    }
    let batch_header = crate::batch::RecordBatchHeader::parse(batch)?;
    let whole = batch_header.batch_bytes() == Some(batch.len());
    whole.then_some(header)
}

/// Where a valid entry of the tail lies.
#[derive(Clone, Copy)]
struct Located {
    position: u64,
    segment: u64,
}

fn apply_entry(
    header: format::EntryHeader,
    batch: &[u8],
    at: Located,
    partitions: &mut HashMap<PartitionId, PartitionState>,
    (ix, hot_max): (IndexIo<'_>, usize),
    report: &mut RecoveryReport,
) -> Result<(), StorageError> {
    let Some(st) = partitions.get_mut(&header.partition) else {
        return Ok(()); // a partition that no longer exists
    };
    if header.kind == EntryKind::Truncation {
        st.truncate_to(header.base_offset, ix)?;
        return Ok(());
    }
    // A whole batch (checked by the scan) has a header to parse.
    let Some(batch_header) = crate::batch::RecordBatchHeader::parse(batch) else {
        return Ok(());
    };
    let entry = IndexEntry {
        base_offset: header.base_offset,
        last_offset_delta: batch_header.last_offset_delta,
        size: batch.len() as u32,
        position: at.position,
        max_timestamp: batch_header.max_timestamp,
        producer_id: batch_header.producer_id,
        producer_epoch: batch_header.producer_epoch,
        // Pending delayed records must stay hidden: recovery marks their
        // batches as appends do.
        attributes: match !batch_header.is_control() && crate::delay::delay_mark(batch) {
            true => batch_header.attributes | crate::format::DELAY_MARK,
            false => batch_header.attributes,
        },
        base_sequence: batch_header.base_sequence,
        running_max_ts: i64::MIN,
        // Recovery does not decompress batches to summarize them.
        tag_summary: crate::format::TAG_SUMMARY_UNKNOWN,
    };
    let bytes = entry.end_position() - entry.position;
    match header.kind {
        // The atomically replaced index file decides whether a compacted copy
        // is live: before the rename the original is, after it the copy is.
        // Its segment is kept either way: the index may point at it.
        EntryKind::Compacted => {
            st.index_mut()
                .note_segment_use(at.segment, bytes, entry.last_offset());
        }
        EntryKind::Batch => {
            if entry.base_offset < st.log_end() {
                return Ok(()); // indexed before the checkpoint was taken
            }
            if entry.base_offset > st.log_end() {
                tracing::warn!(
                    partition = ?header.partition,
                    expected = st.log_end(),
                    found = entry.base_offset,
                    "offset gap in the commit log"
                );
            }
            st.replay_batch(entry, at.segment, hot_max, ix)?;
            if batch_header.is_control() {
                st.note_tail_marker(entry.base_offset, crate::batch::control_marker(batch));
            }
            crate::epochs::learn_recovered(st, batch, entry.base_offset);
            report.index_entries_rebuilt += 1;
        }
        EntryKind::Relocated => {
            let Some((slot, e)) = st.index().find(entry.base_offset, ix)? else {
                return Ok(());
            };
            // A relocation always copies forward to the log head; a copy behind
            // the current position is of a version compaction has replaced.
            if e.base_offset != entry.base_offset
                || e.size != entry.size
                || at.position <= e.position
            {
                return Ok(());
            }
            st.index_mut().set_position(slot, at.position, ix)?;
            st.index_mut()
                .note_segment_use(at.segment, bytes, entry.last_offset());
        }
        EntryKind::Truncation => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::fs::File;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;
    use crate::batch::test_batches::batch;
    use crate::tests::{ManualClock, block_on, open_log, pid};
    use crate::{CommitLog, PartitionConfig};

    /// File I/O on a filesystem that is full: every write fails with ENOSPC.
    #[derive(Default)]
    struct FullDisk {
        full: AtomicBool,
    }

    impl FileIo for FullDisk {
        fn write_all_at(&self, file: &File, buf: &[u8], offset: u64) -> std::io::Result<()> {
            if self.full.load(Ordering::SeqCst) {
                return Err(std::io::Error::from_raw_os_error(ENOSPC));
            }
            std::os::unix::fs::FileExt::write_all_at(file, buf, offset)
        }
    }

    #[test]
    fn a_full_disk_at_open_says_what_is_safe_to_remove() {
        let dir = tempfile::tempdir().unwrap();
        let log = open_log(dir.path(), LogConfig::default());
        let p = log
            .create_partition(pid(0), PartitionConfig::default())
            .unwrap();
        block_on(p.append(batch(2, 10)).unwrap().durable.wait()).unwrap();
        log.shutdown().unwrap();

        let io = Arc::new(FullDisk::default());
        io.full.store(true, Ordering::SeqCst);
        let err = CommitLog::open_with_io(
            dir.path(),
            LogConfig::default(),
            Arc::new(ManualClock::default()),
            io.clone(),
        )
        .unwrap_err();
        assert!(matches!(err, StorageError::DiskFull { .. }), "{err}");
        let text = err.to_string();
        for needed in ["is full", "checkpoint.tmp", "idx.tmp", "never remove"] {
            assert!(text.contains(needed), "{needed:?} missing from: {text}");
        }
        // Once there is space, the same directory opens with every record.
        io.full.store(false, Ordering::SeqCst);
        let (log, _) = CommitLog::open_with_io(
            dir.path(),
            LogConfig::default(),
            Arc::new(ManualClock::default()),
            io,
        )
        .unwrap();
        assert_eq!(log.partition(pid(0)).unwrap().offsets().high_watermark, 2);
        log.shutdown().unwrap();
    }
}
