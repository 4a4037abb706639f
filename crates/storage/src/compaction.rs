//! Log compaction (`cleanup.policy=compact`), run by
//! [`crate::CommitLog::run_maintenance`]: keep only the newest record per
//! key below a partition's cleanable point, and drop tombstones once they
//! are older than `delete.retention.ms`.
//!
//! A batch that loses records is rewritten by [`crate::rebuild`] (which tag
//! filtering shares) by copying the raw bytes of the records it keeps
//! (their varint framing is parsed; headers are never decoded, so duplicate
//! header keys survive byte for byte). Compressed batches are decompressed
//! and recompressed with their own codec. The base offset,
//! `lastOffsetDelta` and each kept record's offset delta stay, so every
//! kept record keeps its offset; the record count, batch length, max
//! timestamp and CRC32C are recomputed.
//!
//! The cleanable point: only batches wholly below both the high watermark
//! and the partition's durable end are considered, and the partition's
//! newest batch is never rewritten (Kafka never cleans the active segment).
//! The key map covers that newest batch too, so a value it supersedes goes.
//!
//! Crash safety: the rewritten batches are appended at the log head as
//! `Compacted` entries and fdatasync'd; then the partition's whole index is
//! written to a new file, fdatasync'd and renamed over the old one (the
//! commit point), and the directory fsync'd. Before the rename the old index
//! points at the old batches, whose segments cannot be deleted yet; after it
//! the new index points at durable copies. Recovery never applies a
//! `Compacted` entry from the store, so each batch reads back in exactly one
//! version. Segment deletion (after the next checkpoint) and the cleaner
//! reclaim the space of the old copies.
//!
//! Transactions: the cleanable point also stays below the last stable
//! offset, so no record of an undecided transaction is compacted. Records
//! of aborted transactions are dropped and never enter the key map (a
//! committed value is never lost to an aborted one). Control batches (the
//! markers) are kept, so read_committed readers always see where each
//! transaction ended.
//!
//! Idempotent-producer state comes from the index: a batch that keeps no
//! record but is its producer's last one stays as an empty batch (header
//! only, record count 0), as Kafka does, so a restart still knows the
//! producer's last sequence.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::Arc;

use bytes::Bytes;

use crate::batch::RecordBatchHeader as H;
use crate::error::StorageError;
use crate::format::{self, EntryKind, IndexEntry};
use crate::index::{QueueIndex, slot_offset};
use crate::log::{lock, read};
use crate::partition::{Located, PartitionInner, read_located};
use crate::rebuild::{BatchParseError, ParsedBatch, rebuild};
use crate::store::Store;

/// Kafka's default `delete.retention.ms`: a tombstone lives a day after it was written.
pub(crate) const DELETE_RETENTION_MS_DEFAULT: i64 = 24 * 3600 * 1000;
/// Suffix of a compaction's new index file before it is renamed into place.
pub(crate) const INDEX_TMP_SUFFIX: &str = ".idx.tmp";
/// The largest records section a compressed batch may decompress to; a
/// batch that decompresses to more is left as it is.
const COMPACTION_DECOMPRESSED_BYTES_MAX: usize = 64 << 20;
/// Memory the key map of one partition may use (key bytes plus a per-key
/// overhead); past it, only the batches the map covers are compacted this run.
const COMPACTION_KEY_MAP_BYTES_MAX: usize = 128 << 20;
/// What one key map entry costs beyond its key bytes (hash slot, offset, allocation).
const KEY_MAP_ENTRY_OVERHEAD_BYTES: usize = 64;
/// The most batches one compaction run covers in a partition (their index
/// entries are held in memory); the rest wait for the next run.
const COMPACTION_BATCHES_PER_RUN_MAX: usize = 1 << 20;
/// A compaction's new index file is written in chunks of this size.
const INSTALL_CHUNK_BYTES: usize = 256 << 10;
/// Compacted entries are written in chunks of about this size.
const COMPACTION_WRITE_CHUNK_BYTES: usize = 1 << 20;
/// Compact once the bytes appended since the last compaction reach 1/N of
/// the cleanable bytes (Kafka's `min.cleanable.dirty.ratio`, 0.5).
const DIRTY_RATIO_DIVISOR: u64 = 2;

/// Compact every partition whose config asks for it and that is due.
/// Returns how many batches were rewritten or removed.
pub(crate) fn run(store: &Store, parts: &[Arc<PartitionInner>]) -> Result<usize, StorageError> {
    let mut changed = 0;
    for p in parts {
        changed += compact_partition(store, p)?;
    }
    Ok(changed)
}

/// The records of a stored batch, read through [`crate::rebuild`];
/// `None` for a control batch (left alone). A batch that cannot be read
/// leaves the whole partition alone this run, since a key hidden in it
/// could be the newest one.
fn parse_batch(batch: &[u8]) -> Result<Option<ParsedBatch<'_>>, BatchParseError> {
    let header = H::parse(batch).ok_or(BatchParseError::ShortHeader { bytes: batch.len() })?;
    if header.is_control() {
        return Ok(None);
    }
    ParsedBatch::parse(batch, COMPACTION_DECOMPRESSED_BYTES_MAX).map(Some)
}

/// What one partition's compaction starts from.
struct Plan {
    /// Batches the key map covers, in offset order.
    covered: Vec<Located>,
    /// How many of the first `covered` batches may be rewritten.
    rewritable: usize,
    /// Last base offset of each producer id among all the partition's batches.
    producer_last: HashMap<i64, i64>,
    /// The aborted transactions among the covered batches: producer id to
    /// (first offset, marker offset) of each.
    aborted: HashMap<i64, Vec<(i64, i64)>>,
    delete_retention_ms: Option<i64>,
    now_ms: i64,
}

fn plan(store: &Store, part: &PartitionInner) -> Result<Option<Plan>, StorageError> {
    let st = lock(&part.state)?;
    if st.removed() || !st.config().compact {
        return Ok(None);
    }
    let ix = store.index_io();
    let now_ms = store.log.clock.now_ms();
    let end = st.hw().min(st.durable_end()).min(st.last_stable());
    let mut covered: Vec<IndexEntry> = Vec::new();
    let mut live = 0usize;
    let (mut dirty, mut total) = (0u64, 0u64);
    let mut producer_last = HashMap::new();
    st.index().scan_live(ix, |_, e| {
        live += 1;
        if e.last_offset() < end && covered.len() < COMPACTION_BATCHES_PER_RUN_MAX {
            covered.push(*e);
            total += u64::from(e.size);
            if e.base_offset >= st.compacted_end() {
                dirty += u64::from(e.size);
            }
        }
        if e.producer_id >= 0 {
            producer_last.insert(e.producer_id, e.base_offset);
        }
        ControlFlow::Continue(())
    })?;
    let rewritable = covered.len().min(live.saturating_sub(1));
    if rewritable == 0 {
        return Ok(None);
    }
    let due =
        (dirty > 0 && dirty * DIRTY_RATIO_DIVISOR >= total) || now_ms >= st.tombstone_due_ms();
    if !due {
        return Ok(None);
    }
    let mut aborted: HashMap<i64, Vec<(i64, i64)>> = HashMap::new();
    for a in st.aborted_in(st.log_start(), end, ix)? {
        aborted
            .entry(a.producer_id)
            .or_default()
            .push((a.first_offset, a.last_offset));
    }
    let segs = read(&store.log.segments)?;
    let mut located = Vec::with_capacity(covered.len());
    for e in covered {
        let Some((_, seg)) = segs.range(..=e.position).next_back() else {
            return Ok(None);
        };
        located.push(Located {
            entry: e,
            segment: seg.clone(),
        });
    }
    Ok(Some(Plan {
        covered: located,
        rewritable,
        producer_last,
        aborted,
        delete_retention_ms: st.delete_retention_ms(),
        now_ms,
    }))
}

impl Plan {
    /// Whether the batch of `e` holds records of an aborted transaction.
    fn aborted(&self, e: &IndexEntry) -> bool {
        e.attributes & H::TRANSACTIONAL != 0
            && e.attributes & H::CONTROL == 0
            && self.aborted.get(&e.producer_id).is_some_and(|txns| {
                txns.iter()
                    .any(|(first, marker)| (*first..=*marker).contains(&e.base_offset))
            })
    }
}

/// The new version of one batch.
struct Rewrite {
    old: IndexEntry,
    /// `None` when the batch is removed.
    new: Option<IndexEntry>,
}

fn compact_partition(store: &Store, part: &Arc<PartitionInner>) -> Result<usize, StorageError> {
    let Some(mut plan) = plan(store, part)? else {
        return Ok(0);
    };
    // Pass 1: the newest offset of every key.
    let mut newest: HashMap<Bytes, i64> = HashMap::new();
    let mut map_bytes = 0usize;
    let mut map_end = plan.covered.first().map_or(0, |l| l.entry.base_offset);
    for (i, l) in plan.covered.iter().enumerate() {
        let batch = read_located(store, part.id, std::slice::from_ref(l))?;
        let parsed = match parse_batch(&batch) {
            Ok(Some(p)) => p,
            Ok(None) => continue,
            Err(why) => {
                tracing::warn!(partition = ?part.id, base_offset = l.entry.base_offset, %why, "batch cannot be compacted; compaction of the partition skipped");
                return Ok(0);
            }
        };
        if map_bytes > COMPACTION_KEY_MAP_BYTES_MAX {
            // The map is full: compact only what it covers.
            plan.covered.truncate(i);
            plan.rewritable = plan.rewritable.min(i);
            break;
        }
        map_end = l.entry.last_offset() + 1;
        if plan.aborted(&l.entry) {
            continue;
        }
        for r in &parsed.frames {
            let Some(key) = r.key.clone().and_then(|k| parsed.records.get(k)) else {
                continue;
            };
            let offset = l.entry.base_offset + r.offset_delta;
            if let Some(o) = newest.get_mut(key) {
                *o = (*o).max(offset);
            } else {
                // A copy, so the map holds only what it counts, not the
                // whole decompressed batch a slice would keep alive.
                map_bytes += key.len() + KEY_MAP_ENTRY_OVERHEAD_BYTES;
                newest.insert(Bytes::copy_from_slice(key), offset);
            }
        }
    }

    // Pass 2: rewrite the batches that lose records.
    let cutoff = plan
        .delete_retention_ms
        .map(|ms| plan.now_ms.saturating_sub(ms));
    let mut tombstone_due = i64::MAX;
    let mut rewrites: Vec<Rewrite> = Vec::new();
    let mut buf = Vec::with_capacity(COMPACTION_WRITE_CHUNK_BYTES);
    let mut pending: Vec<(usize, u64)> = Vec::new();
    for l in plan.covered.iter().take(plan.rewritable) {
        let batch = read_located(store, part.id, std::slice::from_ref(l))?;
        let Ok(Some(parsed)) = parse_batch(&batch) else {
            continue;
        };
        let mut kept = Vec::with_capacity(parsed.frames.len());
        let aborted = plan.aborted(&l.entry);
        for (k, r) in parsed.frames.iter().enumerate().filter(|_| !aborted) {
            let Some(key) = r.key.clone() else {
                kept.push(k); // a null key has no newer value to lose it to
                continue;
            };
            let offset = l.entry.base_offset + r.offset_delta;
            let key = parsed.records.get(key).unwrap_or_default();
            if newest.get(key).is_some_and(|n| *n > offset) {
                continue;
            }
            if r.value.is_none() {
                let ts = parsed.timestamp(r);
                match (cutoff, plan.delete_retention_ms) {
                    (Some(c), _) if ts <= c => continue,
                    (_, Some(ms)) => tombstone_due = tombstone_due.min(ts.saturating_add(ms)),
                    _ => {}
                }
            }
            kept.push(k);
        }
        if kept.len() == parsed.frames.len() {
            continue;
        }
        let producers_last = l.entry.producer_id >= 0
            && plan.producer_last.get(&l.entry.producer_id) == Some(&l.entry.base_offset);
        if kept.is_empty() && !producers_last {
            rewrites.push(Rewrite {
                old: l.entry,
                new: None,
            });
            continue;
        }
        let Some(new_batch) = rebuild(&parsed, &kept) else {
            continue;
        };
        let mut new = l.entry;
        new.size = new_batch.len() as u32;
        if let Some(h) = H::parse(&new_batch) {
            let mark = l.entry.attributes & crate::format::DELAY_MARK;
            (new.max_timestamp, new.attributes) = (h.max_timestamp, h.attributes | mark);
        }
        pending.push((rewrites.len(), buf.len() as u64));
        rewrites.push(Rewrite {
            old: l.entry,
            new: Some(new),
        });
        format::put_entry(
            &mut buf,
            EntryKind::Compacted,
            part.id,
            l.entry.base_offset,
            &new_batch,
        );
        if buf.len() >= COMPACTION_WRITE_CHUNK_BYTES {
            write_chunk(store, part, &mut buf, &mut pending, &mut rewrites)?;
        }
    }
    write_chunk(store, part, &mut buf, &mut pending, &mut rewrites)?;
    if rewrites.is_empty() {
        lock(&part.state)?.compaction_done(map_end, tombstone_due);
        return Ok(0);
    }
    // The copies must be durable before the index points at them.
    store.log.sync_now()?;
    let changed = install(store, part, &rewrites)?;
    lock(&part.state)?.compaction_done(map_end, tombstone_due);
    tracing::info!(partition = ?part.id, batches = changed, "compacted");
    Ok(changed)
}

/// Write the buffered compacted entries at the log head, record where each
/// landed, and note their segment in the partition's segment use at once:
/// a checkpoint written before the index points at the copies must already
/// keep their segment (recovery never re-reads a `Compacted` entry).
fn write_chunk(
    store: &Store,
    part: &PartitionInner,
    buf: &mut Vec<u8>,
    pending: &mut Vec<(usize, u64)>,
    rewrites: &mut [Rewrite],
) -> Result<(), StorageError> {
    if buf.is_empty() {
        return Ok(());
    }
    let written = store.log.write_entries(buf, None)?;
    let mut st = lock(&part.state)?;
    for (i, rel) in pending.drain(..) {
        if let Some(new) = rewrites.get_mut(i).and_then(|r| r.new.as_mut()) {
            new.position = written.position + rel;
            st.index_mut().note_segment_use(
                written.segment,
                new.end_position() - new.position,
                new.last_offset(),
            );
        }
    }
    buf.clear();
    Ok(())
}

/// Point the partition's index at the rewritten batches: a new index file
/// is written (in chunks, with running maxima, live bytes and segment use
/// recomputed), fdatasync'd and renamed over the old one, then the
/// partition's index follows. Returns how many batches changed.
fn install(
    store: &Store,
    part: &PartitionInner,
    rewrites: &[Rewrite],
) -> Result<usize, StorageError> {
    let by_base: HashMap<i64, &Rewrite> = rewrites.iter().map(|r| (r.old.base_offset, r)).collect();
    let mut st = lock(&part.state)?;
    if st.removed() {
        return Ok(0);
    }
    let ix = store.index_io();
    let path = st.index().path().to_path_buf();
    let mut tmp_name = path.clone().into_os_string();
    tmp_name.push(INDEX_TMP_SUFFIX.trim_start_matches(".idx"));
    let tmp = std::path::PathBuf::from(tmp_name);
    let segs = read(&store.log.segments)?;
    let mut fresh = QueueIndex::new(path.clone());
    let mut changed = 0;
    // An index read that fails inside the write: reported as itself.
    let mut failed: Option<StorageError> = None;
    let write = |file: &std::fs::File| -> std::io::Result<()> {
        store
            .log
            .io
            .write_all_at(file, &format::index_header(part.id), 0)?;
        let mut chunk: Vec<u8> = Vec::with_capacity(INSTALL_CHUNK_BYTES);
        let mut write_failed: Option<std::io::Error> = None;
        let scanned = st.index().scan_live(ix, |_, e| {
            // Only a batch still where compaction read it is replaced; the
            // maintenance lock keeps the cleaner away, so this always holds.
            let entry = match by_base.get(&e.base_offset) {
                Some(r) if r.old.position == e.position && r.old.size == e.size => {
                    changed += 1;
                    match r.new {
                        Some(new) => new,
                        None => return ControlFlow::Continue(()),
                    }
                }
                _ => *e,
            };
            let segment = segs
                .range(..=entry.position)
                .next_back()
                .map_or(0, |(b, _)| *b);
            let e = fresh.add_rewritten(entry, segment);
            chunk.extend_from_slice(&e.encode());
            if chunk.len() >= INSTALL_CHUNK_BYTES {
                let at = slot_offset(fresh.next_slot()) - chunk.len() as u64;
                if let Err(e) = store.log.io.write_all_at(file, &chunk, at) {
                    write_failed = Some(e);
                    return ControlFlow::Break(());
                }
                chunk.clear();
            }
            ControlFlow::Continue(())
        });
        if let Err(e) = scanned {
            let text = e.to_string();
            failed = Some(e);
            return Err(std::io::Error::other(text));
        }
        if let Some(e) = write_failed {
            return Err(e);
        }
        let at = slot_offset(fresh.next_slot()) - chunk.len() as u64;
        store.log.io.write_all_at(file, &chunk, at)
    };
    let replaced = crate::io::durable::replace_file(
        store.log.io.as_ref(),
        [
            "storage::compacted_index_sync",
            "storage::compacted_index_rename",
            "storage::compacted_index_dir_sync",
        ],
        &tmp,
        &path,
        write,
    );
    drop(segs);
    match replaced {
        Err(e) if e.step == weir_sync::ReplaceStep::SyncDir => {
            // Which index a restart finds is now unknown: stop writing.
            drop(st);
            return Err(store.poison(format!("{e} after compaction")));
        }
        Err(e) => {
            if let Some(index_error) = failed {
                return Err(index_error);
            }
            return Err(StorageError::from_replace(
                "installing a compacted index",
                e,
            ));
        }
        Ok(()) => {}
    }
    // The old file's unsynced writes no longer matter: the renamed copy,
    // synced above, replaced it. The next write reopens the path.
    store.index_files.forget(&path)?;
    st.install_index(fresh);
    drop(st);
    store.mark_checkpoint_dirty();
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::atomic::Ordering;

    use bytes::Bytes;
    use kafka_protocol::records::RecordBatchDecoder;

    use crate::format::{be_i16, be_i32, be_i64};

    use super::*;
    use crate::records::test_records::{Rec, encode_record, make_batch, rec};
    use crate::tests::{ManualClock, block_on, pid};
    use crate::{CommitLog, LogConfig, Partition, PartitionConfig};

    struct Fixture {
        log: CommitLog,
        clock: Arc<ManualClock>,
        p: Partition,
    }

    fn compacted_config() -> PartitionConfig {
        PartitionConfig {
            retention_ms: None,
            compact: true,
            ..PartitionConfig::default()
        }
    }

    fn open(dir: &Path, now_ms: i64) -> Fixture {
        let clock = Arc::new(ManualClock::default());
        clock.0.store(now_ms, Ordering::SeqCst);
        let (log, _) = CommitLog::open(dir, LogConfig::default(), clock.clone()).unwrap();
        let p = log.create_partition(pid(0), compacted_config()).unwrap();
        Fixture { log, clock, p }
    }

    fn append(p: &Partition, batch: Bytes) -> i64 {
        let out = p.append(batch).unwrap();
        block_on(out.durable.wait()).unwrap();
        out.base_offset
    }

    /// (offset, key, value) of every record readable from `from`.
    fn read_all(p: &Partition, from: i64) -> Vec<(i64, Option<Bytes>, Option<Bytes>)> {
        let mut bytes = p.read(from, usize::MAX).unwrap().records;
        let mut out = Vec::new();
        while !bytes.is_empty() {
            let set = RecordBatchDecoder::decode(&mut bytes).unwrap();
            for r in set.records {
                out.push((r.offset, r.key, r.value));
            }
        }
        out
    }

    fn b(s: &str) -> Option<Bytes> {
        Some(Bytes::from(s.to_string()))
    }

    #[test]
    fn a_key_written_many_times_keeps_only_its_newest_value_at_its_offset() {
        let dir = tempfile::tempdir().unwrap();
        let f = open(dir.path(), 10_000);
        for i in 0..10 {
            let v = format!("v{i}");
            append(&f.p, make_batch(&[rec("a", Some(&v), 1_000 + i)], 0));
        }
        append(&f.p, make_batch(&[rec("b", Some("only"), 2_000)], 0));
        f.log.run_maintenance().unwrap();
        let expected = vec![(9, b("a"), b("v9")), (10, b("b"), b("only"))];
        assert_eq!(read_all(&f.p, 0), expected);
        // A restart reads the compacted index back.
        f.log.shutdown().unwrap();
        drop(f);
        let f = open(dir.path(), 10_000);
        assert_eq!(read_all(&f.p, 0), expected);
        assert_eq!(f.p.offsets().log_end, 11);
    }

    #[test]
    fn reading_from_a_removed_offset_returns_the_next_kept_record() {
        let dir = tempfile::tempdir().unwrap();
        let f = open(dir.path(), 10_000);
        append(
            &f.p,
            make_batch(
                &[
                    rec("a", Some("old"), 1),
                    rec("b", Some("b1"), 2),
                    rec("a", Some("mid"), 3),
                ],
                0,
            ),
        );
        append(&f.p, make_batch(&[rec("c", Some("c1"), 4)], 0));
        append(&f.p, make_batch(&[rec("c", Some("c2"), 5)], 0));
        append(&f.p, make_batch(&[rec("z", Some("z"), 6)], 0));
        f.log.run_maintenance().unwrap();
        // Offset 0 ("a" old) is gone: the read starts at "b" (1).
        let from0 = read_all(&f.p, 0);
        assert_eq!(from0.first(), Some(&(1, b("b"), b("b1"))));
        // Offset 3 ("c" c1, a whole batch) is gone: the read starts at 4.
        assert_eq!(read_all(&f.p, 3).first(), Some(&(4, b("c"), b("c2"))));
        assert_eq!(
            from0.iter().map(|r| r.0).collect::<Vec<_>>(),
            vec![1, 2, 4, 5]
        );
    }

    #[test]
    fn duplicate_header_keys_survive_compaction_byte_for_byte() {
        let dir = tempfile::tempdir().unwrap();
        let f = open(dir.path(), 10_000);
        let headers: &[(&[u8], &[u8])] = &[(b"h", b"1"), (b"h", b"2"), (b"h", b"1")];
        let kept = Rec {
            key: Some(b"k"),
            value: Some(b"v"),
            headers,
            ts: 7,
        };
        let first = make_batch(
            &[
                rec("gone", Some("x"), 5),
                Rec {
                    key: None,
                    value: Some(b"nokey"),
                    headers,
                    ts: 6,
                },
                kept,
            ],
            0,
        );
        append(&f.p, first);
        append(&f.p, make_batch(&[rec("gone", Some("y"), 8)], 0));
        append(&f.p, make_batch(&[rec("z", Some("z"), 9)], 0));
        f.log.run_maintenance().unwrap();
        let stored = f.p.read(0, 1).unwrap().records;
        let parsed = parse_batch(&stored).unwrap().unwrap();
        let raw: Vec<&[u8]> = parsed
            .frames
            .iter()
            .map(|r| &parsed.records[r.bytes.clone()])
            .collect();
        let kept = Rec {
            key: Some(b"k"),
            value: Some(b"v"),
            headers,
            ts: 7,
        };
        let nokey = Rec {
            key: None,
            value: Some(b"nokey"),
            headers,
            ts: 6,
        };
        assert_eq!(
            raw,
            vec![
                &encode_record(1, 1, &nokey)[..],
                &encode_record(2, 2, &kept)[..]
            ]
        );
    }

    #[test]
    fn records_with_null_keys_are_all_kept() {
        let dir = tempfile::tempdir().unwrap();
        let f = open(dir.path(), 10_000);
        let nokey = |v: &'static str| Rec {
            key: None,
            value: Some(v.as_bytes()),
            headers: &[],
            ts: 1,
        };
        append(&f.p, make_batch(&[nokey("n1"), rec("a", Some("a1"), 1)], 0));
        append(&f.p, make_batch(&[nokey("n2"), rec("a", Some("a2"), 1)], 0));
        append(&f.p, make_batch(&[nokey("n3")], 0));
        f.log.run_maintenance().unwrap();
        assert_eq!(
            read_all(&f.p, 0),
            vec![
                (0, None, b("n1")),
                (2, None, b("n2")),
                (3, b("a"), b("a2")),
                (4, None, b("n3")),
            ]
        );
    }

    #[test]
    fn tombstones_are_removed_only_after_delete_retention_ms() {
        let dir = tempfile::tempdir().unwrap();
        let f = open(dir.path(), 1_000);
        f.p.set_delete_retention_ms(Some(60_000));
        append(&f.p, make_batch(&[rec("a", Some("a1"), 1_000)], 0));
        append(&f.p, make_batch(&[rec("a", None, 1_000)], 0));
        append(&f.p, make_batch(&[rec("z", Some("z"), 1_000)], 0));
        f.log.run_maintenance().unwrap();
        // The value is gone; the tombstone stays for consumers to see.
        assert_eq!(
            read_all(&f.p, 0),
            vec![(1, b("a"), None), (2, b("z"), b("z"))]
        );
        f.clock.0.store(1_000 + 59_999, Ordering::SeqCst);
        f.log.run_maintenance().unwrap();
        assert_eq!(read_all(&f.p, 0).len(), 2);
        f.clock.0.store(1_000 + 60_000, Ordering::SeqCst);
        f.log.run_maintenance().unwrap();
        assert_eq!(read_all(&f.p, 0), vec![(2, b("z"), b("z"))]);
    }

    #[test]
    fn every_codec_round_trips_through_compaction() {
        for codec in [1i16, 2, 3, 4] {
            let dir = tempfile::tempdir().unwrap();
            let f = open(dir.path(), 10_000);
            append(
                &f.p,
                make_batch(
                    &[
                        rec("k1", Some("old"), 10),
                        rec("k2", Some("two"), 30),
                        rec("k1", Some("new"), 20),
                    ],
                    codec,
                ),
            );
            append(&f.p, make_batch(&[rec("z", Some("z"), 40)], codec));
            f.log.run_maintenance().unwrap();
            assert_eq!(
                read_all(&f.p, 0),
                vec![
                    (1, b("k2"), b("two")),
                    (2, b("k1"), b("new")),
                    (3, b("z"), b("z")),
                ],
                "codec {codec}"
            );
            let stored = f.p.read(0, 1).unwrap().records;
            assert_eq!(be_i16(&stored, 21).unwrap() & H::COMPRESSION_MASK, codec);
            assert_eq!(be_i32(&stored, 23), Some(2), "lastOffsetDelta stays");
            assert_eq!(
                be_i64(&stored, 35),
                Some(30),
                "max timestamp of kept records"
            );
        }
    }

    #[test]
    fn segments_holding_only_superseded_values_are_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::default());
        let config = LogConfig {
            segment_bytes: 2_000,
            ..LogConfig::default()
        };
        let (log, _) = CommitLog::open(dir.path(), config, clock).unwrap();
        let p = log.create_partition(pid(0), compacted_config()).unwrap();
        let value = "v".repeat(200);
        for i in 0..60 {
            let keyed = [rec("a", Some(&value), i), rec("b", Some(&value), i)];
            append(&p, make_batch(&keyed, 0));
        }
        let segments = || std::fs::read_dir(dir.path().join("log")).unwrap().count();
        let before = segments();
        assert!(before > 10, "only {before} segments");
        log.run_maintenance().unwrap();
        assert!(segments() <= 2, "{} of {before} segments left", segments());
        let last = read_all(&p, 0);
        assert_eq!(last.iter().map(|r| r.0).collect::<Vec<_>>(), vec![118, 119]);
    }

    #[test]
    fn a_producers_last_batch_stays_as_an_empty_batch() {
        let dir = tempfile::tempdir().unwrap();
        let f = open(dir.path(), 10_000);
        let mut idem = make_batch(&[rec("a", Some("a1"), 1)], 0).to_vec();
        idem[43..51].copy_from_slice(&7i64.to_be_bytes());
        idem[51..53].copy_from_slice(&0i16.to_be_bytes());
        idem[53..57].copy_from_slice(&0i32.to_be_bytes());
        let crc = crc32c::crc32c(&idem[21..]);
        idem[17..21].copy_from_slice(&crc.to_be_bytes());
        let idem = Bytes::from(idem);
        append(&f.p, idem.clone());
        append(&f.p, make_batch(&[rec("a", Some("a2"), 2)], 0));
        append(&f.p, make_batch(&[rec("z", Some("z"), 3)], 0));
        f.log.run_maintenance().unwrap();
        let stored = f.p.read(0, 1).unwrap().records;
        assert_eq!(be_i32(&stored, 57), Some(0), "an empty batch");
        assert_eq!(be_i64(&stored, 43), Some(7));
        // A retry of that batch is still recognised as a duplicate.
        let out = f.p.append(idem).unwrap();
        assert!(out.duplicate);
        assert_eq!(out.base_offset, 0);
    }
}
