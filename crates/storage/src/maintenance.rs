//! Retention, compaction (see `compaction.rs`), the cleaner and segment deletion, run by
//! [`crate::CommitLog::run_maintenance`].
//!
//! Retention moves each partition's log-start offset past whole batches that
//! are too old (`retention.ms` against the batch's max timestamp) or too many
//! (`retention.bytes` against the partition's live bytes), never past the
//! high watermark. A segment whose bytes are all dead is deleted. When an old
//! segment is mostly dead but a few live batches pin it (a long-retention
//! partition beside short-retention ones), the cleaner copies those batches'
//! stored bytes to the log head as "relocated" entries, makes them durable,
//! points the index at the copies, and the segment can go.
//!
//! Order matters for crash safety: relocated copies are fdatasync'd before
//! the index points at them, and the checkpoint (which fsyncs the index files
//! and records the new log-start offsets) is written before any segment is
//! deleted, so a restart never looks for a batch in a deleted file.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::error::StorageError;
use crate::format::{self, EntryKind, INDEX_ENTRY_BYTES};
use crate::log::{LogInner, io_err, lock, read, sync_dir, write};
use crate::partition::{Located, PartitionInner, read_located};

/// A segment is cleaned when its live bytes are below this fraction (1/N) of its size.
const CLEANER_LIVE_FRACTION_DIVISOR: u64 = 4;
/// The most bytes the cleaner copies in one maintenance run.
const CLEANER_BYTES_PER_RUN_MAX: u64 = 256 << 20;
/// Relocated entries are written in chunks of about this size.
const CLEANER_WRITE_CHUNK_BYTES: usize = 1 << 20;

/// Apply retention, relocate live batches out of mostly dead segments, and
/// delete segments that hold no live data.
pub(crate) fn run(log: &LogInner) -> Result<(), StorageError> {
    let _one_run = lock(&log.maintenance_lock)?;
    if log.durable_tx.borrow().poisoned.is_some() {
        // Appends are refused until restart, but deleted data's space can come back.
        return crate::reclaim::run_while_poisoned(log);
    }
    let parts: Vec<Arc<PartitionInner>> = read(&log.registry)?.values().cloned().collect();
    if apply_retention(log, &parts)? {
        log.checkpoint_dirty.store(true, Ordering::SeqCst);
        log.bump_progress();
    }
    let compacted = crate::compaction::run(log, &parts)?;
    let relocated = relocate(log, &parts)?;
    let deletable = deletable_segments(log, &parts, u64::MAX)?;
    if deletable.is_empty()
        && relocated == 0
        && compacted == 0
        && !log.checkpoint_dirty.load(Ordering::SeqCst)
    {
        return Ok(());
    }
    log.sync_now()?;
    let checkpoint_pos = log.write_checkpoint()?;
    let deletable = deletable_segments(log, &parts, checkpoint_pos)?;
    delete_segments(log, &deletable)
}

/// Advance log-start offsets by time and size. Returns whether any moved.
fn apply_retention(log: &LogInner, parts: &[Arc<PartitionInner>]) -> Result<bool, StorageError> {
    let now = log.clock.now_ms();
    let mut moved = false;
    for p in parts {
        let mut st = lock(&p.state)?;
        if st.removed {
            continue;
        }
        let mut target = st.log_start;
        if let Some(ms) = st.config.retention_ms.filter(|ms| *ms >= 0) {
            let cutoff = now.saturating_sub(ms);
            for e in &st.entries {
                if e.entry.last_offset() >= st.hw || e.entry.max_timestamp >= cutoff {
                    break;
                }
                target = target.max(e.entry.last_offset() + 1);
            }
        }
        if let Some(limit) = st.config.retention_bytes.filter(|b| *b >= 0) {
            let mut live = st.live_bytes;
            for e in &st.entries {
                if live <= limit as u64 || e.entry.last_offset() >= st.hw {
                    break;
                }
                live = live.saturating_sub(u64::from(e.entry.size));
                target = target.max(e.entry.last_offset() + 1);
            }
        }
        if st.advance_log_start(target) {
            tracing::debug!(partition = ?p.id, log_start = st.log_start, "retention advanced the log start");
            moved = true;
        }
    }
    Ok(moved)
}

/// Segments by base, with their end position; the active one is left out.
fn closed_segments(log: &LogInner) -> Result<BTreeMap<u64, u64>, StorageError> {
    let active = lock(&log.writer)?.active.base;
    let segs = read(&log.segments)?;
    let bases: Vec<u64> = segs.keys().copied().collect();
    let mut out = BTreeMap::new();
    for (i, base) in bases.iter().enumerate() {
        if *base == active {
            continue;
        }
        if let Some(end) = bases.get(i + 1) {
            out.insert(*base, *end);
        }
    }
    Ok(out)
}

/// What keeps a segment: live batches only (what the cleaner copies), or
/// also dead ones no checkpoint has recorded as dead (what deletion keeps).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Pinned {
    Live,
    LiveOrUnrecorded,
}

/// Bytes of the entries that keep each segment (see [`Pinned`]), per segment base.
fn live_by_segment(
    log: &LogInner,
    parts: &[Arc<PartitionInner>],
    pinned: Pinned,
) -> Result<BTreeMap<u64, u64>, StorageError> {
    let bases: Vec<u64> = read(&log.segments)?.keys().copied().collect();
    let mut live = BTreeMap::new();
    for p in parts {
        let st = lock(&p.state)?;
        if st.removed {
            continue;
        }
        // Decided from the log starts a checkpoint recorded, not the ones in
        // memory: a DeleteRecords whose checkpoint is not yet written must
        // not lose segments that a restart would look for.
        let unrecorded = match pinned {
            Pinned::Live => &[][..],
            Pinned::LiveOrUnrecorded => &st.dead_unrecorded[..],
        };
        for e in st.entries.iter().map(|e| &e.entry).chain(unrecorded) {
            let i = bases.partition_point(|b| *b <= e.position);
            if let Some(base) = i.checked_sub(1).and_then(|i| bases.get(i)) {
                *live.entry(*base).or_insert(0) += e.end_position() - e.position;
            }
        }
    }
    Ok(live)
}

/// Closed segments without live data that end at or before `durable_limit`.
fn deletable_segments(
    log: &LogInner,
    parts: &[Arc<PartitionInner>],
    durable_limit: u64,
) -> Result<Vec<u64>, StorageError> {
    let live = live_by_segment(log, parts, Pinned::LiveOrUnrecorded)?;
    Ok(closed_segments(log)?
        .into_iter()
        .filter(|(base, end)| *end <= durable_limit && live.get(base).copied().unwrap_or(0) == 0)
        .map(|(base, _)| base)
        .collect())
}

pub(crate) fn delete_segments(log: &LogInner, bases: &[u64]) -> Result<(), StorageError> {
    if bases.is_empty() {
        return Ok(());
    }
    for base in bases {
        let Some(seg) = write(&log.segments)?.remove(base) else {
            continue;
        };
        std::fs::remove_file(&seg.path)
            .map_err(|e| io_err(format!("removing {}", seg.path.display()), e))?;
        tracing::info!(segment = %seg.path.display(), "deleted a commit-log segment with no live data");
    }
    sync_dir(&log.log_dir).map_err(|e| io_err(format!("fsync of {}", log.log_dir.display()), e))
}

/// One batch the cleaner moved.
struct Moved {
    partition: Arc<PartitionInner>,
    base_offset: i64,
    old_position: u64,
    new_position: u64,
}

/// Copy the live batches of mostly dead closed segments to the log head.
/// Returns how many batches moved.
fn relocate(log: &LogInner, parts: &[Arc<PartitionInner>]) -> Result<usize, StorageError> {
    let live = live_by_segment(log, parts, Pinned::Live)?;
    let mut budget = CLEANER_BYTES_PER_RUN_MAX;
    let mut targets: Vec<(u64, u64)> = Vec::new();
    for (base, end) in closed_segments(log)? {
        let l = live.get(&base).copied().unwrap_or(0);
        if l == 0 || l * CLEANER_LIVE_FRACTION_DIVISOR >= end - base || l > budget {
            continue;
        }
        budget -= l;
        targets.push((base, end));
    }
    if targets.is_empty() {
        return Ok(0);
    }
    let in_target = |pos: u64| targets.iter().any(|(b, e)| pos >= *b && pos < *e);

    let mut moved = Vec::new();
    let mut buf = Vec::with_capacity(CLEANER_WRITE_CHUNK_BYTES);
    let mut pending: Vec<(Arc<PartitionInner>, i64, u64, u64)> = Vec::new();
    for p in parts {
        let located: Vec<Located> = {
            let st = lock(&p.state)?;
            if st.removed {
                continue;
            }
            let segs = read(&log.segments)?;
            st.entries
                .iter()
                .filter(|e| in_target(e.entry.position))
                .filter_map(|e| {
                    let seg = segs.range(..=e.entry.position).next_back()?.1.clone();
                    Some(Located {
                        entry: e.entry,
                        segment: seg,
                    })
                })
                .collect()
        };
        for l in located {
            let batch = read_located(log, p.id, std::slice::from_ref(&l))?;
            let rel = buf.len() as u64;
            format::put_entry(
                &mut buf,
                EntryKind::Relocated,
                p.id,
                l.entry.base_offset,
                &batch,
            );
            pending.push((p.clone(), l.entry.base_offset, l.entry.position, rel));
            if buf.len() >= CLEANER_WRITE_CHUNK_BYTES {
                flush_chunk(log, &mut buf, &mut pending, &mut moved)?;
            }
        }
    }
    flush_chunk(log, &mut buf, &mut pending, &mut moved)?;
    // The copies must be durable before the index points at them.
    log.sync_now()?;
    let mut count = 0;
    for m in &moved {
        let mut st = lock(&m.partition.state)?;
        let Some(i) = st.find(m.base_offset) else {
            continue;
        };
        let Some(e) = st.entries.get_mut(i) else {
            continue;
        };
        if e.entry.base_offset != m.base_offset || e.entry.position != m.old_position {
            continue;
        }
        e.entry.position = m.new_position;
        let (slot, bytes) = (e.slot, e.entry.encode());
        debug_assert_eq!(bytes.len(), INDEX_ENTRY_BYTES);
        st.write_index(slot, &bytes, log)?;
        count += 1;
    }
    tracing::info!(
        batches = count,
        segments = targets.len(),
        "cleaner relocated live batches"
    );
    Ok(count)
}

fn flush_chunk(
    log: &LogInner,
    buf: &mut Vec<u8>,
    pending: &mut Vec<(Arc<PartitionInner>, i64, u64, u64)>,
    moved: &mut Vec<Moved>,
) -> Result<(), StorageError> {
    if buf.is_empty() {
        return Ok(());
    }
    let start = log.write_entries(buf, None)?;
    for (partition, base_offset, old_position, rel) in pending.drain(..) {
        moved.push(Moved {
            partition,
            base_offset,
            old_position,
            new_position: start + rel,
        });
    }
    buf.clear();
    Ok(())
}
