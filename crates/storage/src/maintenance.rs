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
use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::PartitionId;
use crate::error::StorageError;
use crate::format::{self, EntryKind};
use crate::io::{IndexIo, durable};
use crate::log::{io_err, lock, read, write};
use crate::partition::{
    LOG_START_STEP_ENTRIES, Located, PartitionInner, PartitionState, read_located,
};
use crate::store::Store;

/// A segment is cleaned when its live bytes are below this fraction (1/N) of its size.
const CLEANER_LIVE_FRACTION_DIVISOR: u64 = 4;
/// The most bytes the cleaner copies in one maintenance run.
const CLEANER_BYTES_PER_RUN_MAX: u64 = 256 << 20;
/// Relocated entries are written in chunks of about this size.
const CLEANER_WRITE_CHUNK_BYTES: usize = 1 << 20;

/// Apply retention, relocate live batches out of mostly dead segments, and
/// delete segments that hold no live data.
pub(crate) fn run(store: &Store) -> Result<(), StorageError> {
    let _one_run = lock(&store.maintenance_lock)?;
    if store.log.durable_tx.borrow().poisoned.is_some() {
        // Appends are refused until restart, but deleted data's space can come back.
        return crate::reclaim::run_while_poisoned(store);
    }
    let parts: Vec<Arc<PartitionInner>> = read(&store.registry)?.values().cloned().collect();
    if apply_retention(store, &parts)? {
        store.mark_checkpoint_dirty();
        store.bump_progress();
    }
    let compacted = crate::compaction::run(store, &parts)?;
    let relocated = relocate(store, &parts)?;
    let deletable = deletable_segments(store, &parts, u64::MAX)?;
    if deletable.is_empty()
        && relocated == 0
        && compacted == 0
        && !store.checkpoint_dirty.load(Ordering::SeqCst)
    {
        return Ok(());
    }
    store.log.sync_now()?;
    let checkpoint_pos = store.write_checkpoint()?;
    let deletable = deletable_segments(store, &parts, checkpoint_pos)?;
    delete_segments(store, &deletable)
}

/// Advance log-start offsets by time and size. Returns whether any moved.
fn apply_retention(store: &Store, parts: &[Arc<PartitionInner>]) -> Result<bool, StorageError> {
    let now = store.log.clock.now_ms();
    let ix = store.index_io();
    let mut moved = false;
    for p in parts {
        // One step of at most LOG_START_STEP_ENTRIES batches per lock.
        loop {
            let mut st = lock(&p.state)?;
            if st.removed() {
                break;
            }
            let (target, more) = retention_step(&st, now, ix)?;
            if !st.advance_log_start(target, ix)? {
                break;
            }
            tracing::debug!(partition = ?p.id, log_start = st.log_start(), "retention advanced the log start");
            moved = true;
            if !more {
                break;
            }
        }
    }
    Ok(moved)
}

/// Where retention moves a partition's log start, looking at no more than
/// [`LOG_START_STEP_ENTRIES`] batches; `true` when it stopped for that
/// limit (another step may go further).
fn retention_step(
    st: &PartitionState,
    now: i64,
    ix: IndexIo<'_>,
) -> Result<(i64, bool), StorageError> {
    let first = st.index().first_slot();
    let to = first
        .saturating_add(LOG_START_STEP_ENTRIES)
        .min(st.index().next_slot());
    let more = to < st.index().next_slot();
    let hw = st.hw();
    let mut target = st.log_start();
    let mut time_done = true;
    if let Some(ms) = st.config().retention_ms.filter(|ms| *ms >= 0) {
        let cutoff = now.saturating_sub(ms);
        time_done = false;
        st.index().scan(first, to, ix, |_, e| {
            if e.last_offset() >= hw || e.max_timestamp >= cutoff {
                time_done = true;
                return ControlFlow::Break(());
            }
            target = target.max(e.last_offset() + 1);
            ControlFlow::Continue(())
        })?;
    }
    let mut bytes_done = true;
    if let Some(limit) = st.config().retention_bytes.filter(|b| *b >= 0) {
        let mut live = st.index().live_bytes();
        bytes_done = false;
        st.index().scan(first, to, ix, |_, e| {
            if live <= limit as u64 || e.last_offset() >= hw {
                bytes_done = true;
                return ControlFlow::Break(());
            }
            live = live.saturating_sub(u64::from(e.size));
            target = target.max(e.last_offset() + 1);
            ControlFlow::Continue(())
        })?;
    }
    Ok((target, more && !(time_done && bytes_done)))
}

/// Segments by base, with their end position; the active one is left out.
fn closed_segments(store: &Store) -> Result<BTreeMap<u64, u64>, StorageError> {
    let active = lock(&store.log.writer)?.active.base;
    let segs = read(&store.log.segments)?;
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

/// Bytes (an upper bound; at least 1 for a segment that is pinned at all)
/// of the batches that keep each segment (see [`Pinned`]), per segment base,
/// from each partition's segment use: no index is read.
fn live_by_segment(
    parts: &[Arc<PartitionInner>],
    pinned: Pinned,
) -> Result<BTreeMap<u64, u64>, StorageError> {
    let mut live = BTreeMap::new();
    for p in parts {
        let st = lock(&p.state)?;
        if st.removed() {
            continue;
        }
        // Decided from the log starts a checkpoint recorded, not only the
        // ones in memory: a DeleteRecords whose checkpoint is not yet
        // written must not lose segments that a restart would look for.
        let keep_from = match pinned {
            Pinned::Live => st.log_start(),
            Pinned::LiveOrUnrecorded => st.restart_log_start(),
        };
        for (base, u) in st.index().segment_uses() {
            if u.max_last_offset >= keep_from {
                *live.entry(*base).or_insert(0) += u.bytes.max(1);
            }
        }
    }
    Ok(live)
}

/// Closed segments without live data that end at or before `durable_limit`.
fn deletable_segments(
    store: &Store,
    parts: &[Arc<PartitionInner>],
    durable_limit: u64,
) -> Result<Vec<u64>, StorageError> {
    let live = live_by_segment(parts, Pinned::LiveOrUnrecorded)?;
    Ok(closed_segments(store)?
        .into_iter()
        .filter(|(base, end)| *end <= durable_limit && live.get(base).copied().unwrap_or(0) == 0)
        .map(|(base, _)| base)
        .collect())
}

pub(crate) fn delete_segments(store: &Store, bases: &[u64]) -> Result<(), StorageError> {
    if bases.is_empty() {
        return Ok(());
    }
    for base in bases {
        let Some(seg) = write(&store.log.segments)?.remove(base) else {
            continue;
        };
        store
            .log
            .io
            .remove_file(&seg.path)
            .map_err(|e| io_err(format!("removing {}", seg.path.display()), e))?;
        tracing::info!(segment = %seg.path.display(), "deleted a commit-log segment with no live data");
    }
    let parts: Vec<Arc<PartitionInner>> = read(&store.registry)?.values().cloned().collect();
    for p in parts {
        lock(&p.state)?.index_mut().forget_segments(bases);
    }
    durable::sync_dir(
        store.log.io.as_ref(),
        "storage::segment_delete_dir_sync",
        &store.log.log_dir,
    )
    .map_err(|e| io_err(format!("fsync of {}", store.log.log_dir.display()), e))
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
fn relocate(store: &Store, parts: &[Arc<PartitionInner>]) -> Result<usize, StorageError> {
    let live = live_by_segment(parts, Pinned::Live)?;
    let mut budget = CLEANER_BYTES_PER_RUN_MAX;
    let mut targets: Vec<(u64, u64)> = Vec::new();
    for (base, end) in closed_segments(store)? {
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

    let ix = store.index_io();
    let mut moved = Vec::new();
    let mut buf = Vec::with_capacity(CLEANER_WRITE_CHUNK_BYTES);
    let mut pending: Vec<(Arc<PartitionInner>, i64, u64, u64)> = Vec::new();
    // Partitions whose every live batch in the targets is being copied.
    let mut emptied: Vec<Arc<PartitionInner>> = Vec::new();
    for p in parts {
        let located: Vec<Located> = {
            let st = lock(&p.state)?;
            if st.removed() {
                continue;
            }
            let log_start = st.log_start();
            let uses_target = st
                .index()
                .segment_uses()
                .iter()
                .any(|(base, u)| u.max_last_offset >= log_start && in_target(*base));
            if !uses_target {
                continue;
            }
            let mut entries = Vec::new();
            st.index().scan_live(ix, |_, e| {
                if in_target(e.position) {
                    entries.push(*e);
                }
                ControlFlow::Continue(())
            })?;
            let segs = read(&store.log.segments)?;
            entries
                .into_iter()
                .filter_map(|e| {
                    let seg = segs.range(..=e.position).next_back()?.1.clone();
                    Some(Located {
                        entry: e,
                        segment: seg,
                    })
                })
                .collect()
        };
        emptied.push(p.clone());
        for l in located {
            let batch = read_located(store, p.id, std::slice::from_ref(&l))?;
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
                flush_chunk(store, &mut buf, &mut pending, &mut moved)?;
            }
        }
    }
    flush_chunk(store, &mut buf, &mut pending, &mut moved)?;
    // The copies must be durable before the index points at them.
    store.log.sync_now()?;
    let mut count = 0;
    let mut missed: Vec<PartitionId> = Vec::new();
    for m in &moved {
        let mut st = lock(&m.partition.state)?;
        let current = st.index().find(m.base_offset, ix)?;
        match current {
            Some((slot, e)) if e.base_offset == m.base_offset && e.position == m.old_position => {
                st.index_mut().set_position(slot, m.new_position, ix)?;
                store.mark_checkpoint_dirty();
                count += 1;
            }
            // Gone below the log start meanwhile: nothing to move.
            None => {}
            Some(_) => missed.push(m.partition.id),
        }
    }
    // A partition all of whose live batches in the targets now point at
    // copies keeps nothing live there.
    for p in emptied {
        if missed.contains(&p.id) {
            continue;
        }
        let mut st = lock(&p.state)?;
        let log_start = st.log_start();
        for (base, _) in &targets {
            st.index_mut().segment_emptied(*base, log_start);
        }
    }
    tracing::info!(
        batches = count,
        segments = targets.len(),
        "cleaner relocated live batches"
    );
    Ok(count)
}

/// Write the buffered relocated entries at the log head, note each copy's
/// segment in its partition's segment use (before anything can vouch for
/// them, so no segment holding a copy the index may point at is ever taken
/// for empty), and record where each landed.
fn flush_chunk(
    store: &Store,
    buf: &mut Vec<u8>,
    pending: &mut Vec<(Arc<PartitionInner>, i64, u64, u64)>,
    moved: &mut Vec<Moved>,
) -> Result<(), StorageError> {
    if buf.is_empty() {
        return Ok(());
    }
    let written = store.log.write_entries(buf, None)?;
    for (partition, base_offset, old_position, rel) in pending.drain(..) {
        let new_position = written.position + rel;
        {
            let mut st = lock(&partition.state)?;
            if let Some((_, e)) = st.index().find(base_offset, store.index_io())? {
                st.index_mut().note_segment_use(
                    written.segment,
                    e.end_position() - e.position,
                    e.last_offset(),
                );
            }
        }
        moved.push(Moved {
            partition,
            base_offset,
            old_position,
            new_position,
        });
    }
    buf.clear();
    Ok(())
}
