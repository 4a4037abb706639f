//! Filtered reads of one partition: for views, through a tag filter
//! ([`crate::tags`] decides which records match), and for every consumer
//! read that meets a batch with the index's delay mark, hiding pending
//! delayed records ([`crate::delay`]). This module decides which batches to
//! read at all, and what the reader gets back.
//!
//! The queue index is walked from the batch holding the offset asked for.
//! A batch whose tag summary rules out every tag of the filter is skipped
//! without being read. The others (and every control batch, which
//! read_committed readers need) are read with the same positional reads as
//! an unfiltered read, then each is sent as stored when every record
//! matches, rebuilt from the matching records' bytes when some do, or
//! skipped when none does. Kept records keep their offsets; the gaps are
//! what compaction leaves too.
//!
//! A reader must be able to move past what it was not sent, or it would ask
//! for the same offset forever. When the read ends on skipped batches, the
//! answer ends with a control batch of no records spanning them
//! ([`skipped_range_batch`]), which every Kafka client steps over to the
//! offset after it without counting it as a message it failed to read.
//!
//! Work per read is bounded: at most [`SCAN_ENTRIES_MAX`] index entries are
//! looked at and at most the read limit of source bytes is read, whatever
//! the filter keeps.

use bytes::Bytes;

use crate::batch::RecordBatchHeader;
use crate::delay::filter_pending;
use crate::format::{DELAY_MARK, IndexEntry};
use crate::log::lock;
use crate::partition::{
    LOCATE_CHUNK_ENTRIES, PartitionInner, locate_entries, read_located, read_located_into,
    read_start,
};
use crate::store::Store;
use crate::tags::{Filtered, TagExpr, filter_batch, skipped_range_batch};
use crate::{ReadBound, ReadError, ReadOutcome};

/// The most index entries one filtered read looks at. A view whose tags are
/// rare answers after this many batches with an empty control batch spanning them,
/// so its consumer moves on and the next read starts past them.
pub(crate) const SCAN_ENTRIES_MAX: usize = 16 * 1024;

/// What the walk of the index decided for a run of batches.
#[derive(Debug)]
enum Step {
    /// Read this batch and filter its records.
    Read(IndexEntry),
    /// Batches whose summaries rule the filter out: first offset, last
    /// offset and largest timestamp.
    Skip(i64, i64, i64),
}

/// Read from `offset` the records `filter` matches (every record without
/// one), less pending delayed records, up to `max_bytes` of
/// source batches read (at least one batch), bounded like
/// [`crate::Partition::read`] by `bound`.
pub(crate) fn read_filtered(
    store: &Store,
    part: &PartitionInner,
    (offset, max_bytes): (i64, usize),
    bound: ReadBound,
    filter: Option<&TagExpr>,
) -> Result<ReadOutcome, ReadError> {
    let (located, steps, offsets, aborted) = {
        let st = lock(&part.state)?;
        let offsets = st.offsets();
        let Some((from, end)) = read_start(store, &st, offset, bound)? else {
            return Ok(ReadOutcome {
                records: Bytes::new(),
                offsets,
                aborted: Vec::new(),
            });
        };
        let limit = max_bytes.min(store.log.config.read_bytes_max);
        let mut steps: Vec<Step> = Vec::new();
        let mut wanted = Vec::new();
        let mut read_bytes = 0usize;
        walk_index(store, &st, from, |e| {
            if e.base_offset >= end {
                return Ok(false);
            }
            let control = e.attributes & RecordBatchHeader::CONTROL != 0;
            if control || filter.is_none_or(|f| f.may_match(e.tag_summary)) {
                let size = e.size as usize;
                if !wanted.is_empty() && read_bytes + size > limit {
                    return Ok(false);
                }
                read_bytes += size;
                wanted.push(e);
                steps.push(Step::Read(e));
                if read_bytes >= limit {
                    return Ok(false);
                }
            } else {
                skip(&mut steps, e.base_offset, e.last_offset(), e.max_timestamp);
            }
            Ok(true)
        })?;
        let last_offset = steps.last().map(|step| match step {
            Step::Read(e) => e.last_offset(),
            Step::Skip(_, last, _) => *last,
        });
        let aborted = match (bound, last_offset) {
            (ReadBound::LastStable, Some(last)) => {
                st.aborted_in(offset, last + 1, store.index_io())?
            }
            _ => Vec::new(),
        };
        let located = locate_entries(store, &st, wanted)?;
        (located, steps, offsets, aborted)
    };
    let bytes = read_located(store, part.id, &located)?;
    let mut out = Vec::with_capacity(bytes.len());
    // The skipped batches since the last one sent.
    let mut trailing: Option<(i64, i64, i64)> = None;
    let mut at = 0usize;
    for step in steps {
        let (first, last, max_ts) = match step {
            Step::Skip(first, last, max_ts) => (first, last, max_ts),
            Step::Read(e) => {
                let size = e.size as usize;
                let batch = bytes.get(at..at + size).unwrap_or_default();
                at += size;
                let filtered = match (e.attributes & DELAY_MARK != 0, filter) {
                    (true, _) => filter_pending(batch, filter),
                    (false, Some(filter)) => filter_batch(batch, filter),
                    (false, None) => Ok(Filtered::Whole),
                };
                let kept = match filtered {
                    Ok(Filtered::Whole) => Some(batch.to_vec()),
                    Ok(Filtered::Part(rebuilt)) => Some(rebuilt),
                    Ok(Filtered::Skip) => None,
                    // A consumer read without a view sends what it cannot
                    // walk as stored: Produce refuses delayed records in
                    // such a batch, so it hides nothing pending.
                    Err(_) if filter.is_none() => Some(batch.to_vec()),
                    // The producer's CRC held but its records cannot be
                    // walked (or decompress past the bound): no record of
                    // it can be shown to match.
                    Err(err) => {
                        tracing::warn!(
                            partition = ?part.id,
                            offset = e.base_offset,
                            error = %err,
                            "a view skips a batch whose records cannot be read"
                        );
                        None
                    }
                };
                if let Some(kept) = kept {
                    trailing = None;
                    out.extend_from_slice(&kept);
                    continue;
                }
                (e.base_offset, e.last_offset(), e.max_timestamp)
            }
        };
        trailing = Some(match trailing {
            Some((start, _, ts)) => (start, last, ts.max(max_ts)),
            None => (first, last, max_ts),
        });
    }
    if let Some((first, last, max_ts)) = trailing {
        // An empty batch spans at most i32::MAX offsets; the next read
        // starts after it either way.
        let last = last.min(first.saturating_add(i64::from(i32::MAX)));
        if let Some(empty) = skipped_range_batch(first, last, max_ts) {
            out.extend_from_slice(&empty);
        }
    }
    Ok(ReadOutcome {
        records: Bytes::from(out),
        offsets,
        aborted,
    })
}

/// The batches with the index's [`DELAY_MARK`] among those holding offsets
/// `from..to` (clamped to the log), as stored, and the offset a next call
/// starts from (`to` once the range is walked). Looks at most
/// [`SCAN_ENTRIES_MAX`] index entries and reads at most `max_bytes` (at
/// least one batch), so a caller walks a long range in steps. For the delay
/// mover: it sees every replica's pending records and delivered copies.
pub(crate) fn delay_batches(
    store: &Store,
    part: &PartitionInner,
    range: (i64, i64),
    max_bytes: usize,
) -> Result<crate::DelayBatches, ReadError> {
    let mut read = Vec::new();
    let crate::DelaySpans { spans, next } =
        delay_batches_into(store, part, range, max_bytes, &mut read)?;
    let bytes = Bytes::from(read);
    let batches = spans
        .into_iter()
        .map(|(base, span)| (base, bytes.slice(span)))
        .collect();
    Ok(crate::DelayBatches { batches, next })
}

/// [`delay_batches`], appending the batches to `out`: each one's base
/// offset and where in `out` it lies. On an error `out` holds what it held
/// before.
pub(crate) fn delay_batches_into(
    store: &Store,
    part: &PartitionInner,
    (from, to): (i64, i64),
    max_bytes: usize,
    out: &mut Vec<u8>,
) -> Result<crate::DelaySpans, ReadError> {
    let (located, next) = {
        let st = lock(&part.state)?;
        let to = to.min(st.log_end());
        let from = from.max(st.log_start());
        let slot = match from < to {
            true => st.index().find_from(from, store.index_io())?,
            false => None,
        };
        let Some(slot) = slot else {
            return Ok(crate::DelaySpans {
                spans: Vec::new(),
                next: to.max(from),
            });
        };
        let mut wanted = Vec::new();
        let (mut read_bytes, mut next) = (0usize, to);
        let walked = walk_index(store, &st, slot, |e| {
            if e.base_offset >= to {
                return Ok(false);
            }
            let size = e.size as usize;
            let marked = e.attributes & DELAY_MARK != 0;
            if marked && !wanted.is_empty() && read_bytes + size > max_bytes {
                next = e.base_offset;
                return Ok(false);
            }
            if marked {
                read_bytes += size;
                wanted.push(e);
            }
            Ok(true)
        })?;
        if let Some(stopped_before) = walked {
            // The walk's bound: go on from the entry it did not look at.
            next = stopped_before;
        }
        (locate_entries(store, &st, wanted)?, next)
    };
    let mut at = out.len();
    read_located_into(store, part.id, &located, out)?;
    let mut spans = Vec::with_capacity(located.len());
    for l in &located {
        let size = l.entry.size as usize;
        spans.push((l.entry.base_offset, at..at + size));
        at += size;
    }
    Ok(crate::DelaySpans { spans, next })
}

/// Visit the index entries from `slot` on, in order, while `visit` returns
/// true, at most [`SCAN_ENTRIES_MAX`] of them. Returns the base offset of
/// the entry the bound stopped before, when it did.
fn walk_index(
    store: &Store,
    st: &crate::partition::PartitionState,
    mut slot: u64,
    mut visit: impl FnMut(IndexEntry) -> Result<bool, ReadError>,
) -> Result<Option<i64>, ReadError> {
    let mut scanned = 0usize;
    loop {
        let chunk = st
            .index()
            .read_range(slot, LOCATE_CHUNK_ENTRIES, store.index_io())?;
        if chunk.is_empty() {
            return Ok(None);
        }
        slot += chunk.len() as u64;
        for e in chunk {
            if scanned >= SCAN_ENTRIES_MAX {
                return Ok(Some(e.base_offset));
            }
            if !visit(e)? {
                return Ok(None);
            }
            scanned += 1;
        }
    }
}

/// Add a skipped batch to the steps, merging it into a run just before.
fn skip(steps: &mut Vec<Step>, first: i64, last: i64, max_ts: i64) {
    if let Some(Step::Skip(_, run_last, run_ts)) = steps.last_mut() {
        *run_last = last;
        *run_ts = (*run_ts).max(max_ts);
        return;
    }
    steps.push(Step::Skip(first, last, max_ts));
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use kafka_protocol::records::RecordBatchDecoder;

    use crate::records::test_records::{Rec, make_batch};
    use crate::tests::{ManualClock, block_on, pid};
    use crate::{CommitLog, LogConfig, Partition, PartitionConfig, TagExpr};

    fn tagged(tag: &'static str) -> Rec<'static> {
        let headers: &'static [(&'static [u8], &'static [u8])] = match tag {
            "VIP" => &[(b"weir.tag", b"VIP")],
            "IRON" => &[(b"weir.tag", b"IRON")],
            _ => &[],
        };
        Rec {
            key: None,
            value: Some(b"v"),
            headers,
            ts: 1_000,
        }
    }

    fn append(p: &Partition, tags: &[&'static str], codec: i16) {
        let recs: Vec<Rec> = tags.iter().map(|t| tagged(t)).collect();
        let out = p.append(make_batch(&recs, codec)).unwrap();
        block_on(out.durable.wait()).unwrap();
    }

    /// Offsets of the records read, and the offset after the last batch.
    fn read(p: &Partition, from: i64, filter: &str) -> (Vec<i64>, i64) {
        let filter = TagExpr::parse(filter).unwrap();
        let mut bytes = p
            .read_filtered(from, usize::MAX, false, &filter)
            .unwrap()
            .records;
        let (mut offsets, mut next) = (Vec::new(), from);
        while !bytes.is_empty() {
            let set = RecordBatchDecoder::decode(&mut bytes).unwrap();
            offsets.extend(set.records.iter().map(|r| r.offset));
            next = next.max(set.records.last().map_or(next, |r| r.offset + 1));
        }
        // The batches' own spans, empty ones included.
        let mut all = p
            .read_filtered(from, usize::MAX, false, &filter)
            .unwrap()
            .records;
        while all.len() >= crate::batch::BATCH_HEADER_BYTES {
            let h = crate::RecordBatchHeader::parse(&all).unwrap();
            next = next.max(h.last_offset() + 1);
            let len = h.batch_bytes().unwrap();
            all = all.slice(len..);
        }
        (offsets, next)
    }

    fn fixture(summaries: bool) -> (tempfile::TempDir, CommitLog, Partition) {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::default());
        let (log, _) = CommitLog::open(dir.path(), LogConfig::default(), clock).unwrap();
        let config = PartitionConfig {
            tag_summaries: summaries,
            ..PartitionConfig::default()
        };
        let p = log.create_partition(pid(0), config).unwrap();
        (dir, log, p)
    }

    #[test]
    fn a_view_reads_only_matching_records_and_moves_past_the_rest() {
        for summaries in [true, false] {
            for codec in [0, 3] {
                let (_dir, _log, p) = fixture(summaries);
                append(&p, &["VIP", "VIP", "VIP"], codec); // 0..=2
                append(&p, &["IRON", "IRON", "IRON"], codec); // 3..=5
                append(&p, &["VIP", "IRON", "", "VIP"], codec); // 6..=9
                append(&p, &["IRON", ""], codec); // 10..=11
                let case = format!("summaries {summaries}, codec {codec}");
                assert_eq!(read(&p, 0, "VIP"), (vec![0, 1, 2, 6, 9], 12), "{case}");
                assert_eq!(read(&p, 3, "VIP"), (vec![6, 9], 12), "{case}");
                assert_eq!(read(&p, 10, "VIP"), (vec![], 12), "{case}");
                assert_eq!(read(&p, 0, "GOLD"), (vec![], 12), "{case}");
                assert_eq!(read(&p, 0, "IRON || VIP").0.len(), 10, "{case}");
                assert_eq!(read(&p, 0, "*").0.len(), 12, "{case}");
                assert_eq!(read(&p, 12, "VIP"), (vec![], 12), "{case}: at the end");
            }
        }
    }

    #[test]
    fn batches_appended_while_views_read_carry_their_summary_in_the_index() {
        let (_dir, _log, p) = fixture(true);
        append(&p, &["VIP"], 0);
        append(&p, &["IRON"], 4);
        let st = crate::log::lock(&p.inner.state).unwrap();
        let entries = st.index().read_range(0, 2, p.log.index_io()).unwrap();
        let vip = TagExpr::parse("VIP").unwrap();
        assert!(vip.may_match(entries[0].tag_summary));
        assert!(!vip.may_match(entries[1].tag_summary));
        assert_ne!(entries[1].tag_summary, crate::format::TAG_SUMMARY_UNKNOWN);
    }

    use bytes::Bytes;
    use kafka_protocol::records::Record;

    use crate::records::test_records::encode_record;
    use crate::tests::stored;

    type Header = (&'static [u8], &'static [u8]);

    /// Due a minute after the record's timestamp.
    const DELAY: Header = (crate::DELAY_MS_HEADER.as_bytes(), b"60000");
    /// Due at a fixed time, already past when the test reads.
    const AT: Header = (crate::DELIVER_AT_HEADER.as_bytes(), b"5000");
    /// A delay header no producer may send now: a record stored with it
    /// (before delayed delivery existed) is not pending.
    const MALFORMED: Header = (crate::DELAY_MS_HEADER.as_bytes(), b"soon");
    const VIP: Header = (b"weir.tag", b"VIP");
    const IRON: Header = (b"weir.tag", b"IRON");

    fn record(key: &'static [u8], headers: &'static [Header], ts: i64) -> Rec<'static> {
        Rec {
            key: Some(key),
            value: Some(b"value"),
            headers,
            ts,
        }
    }

    /// Append `batch` and wait until it is durable; its base offset.
    fn append_batch(p: &Partition, batch: Bytes) -> i64 {
        let out = p.append(batch).unwrap();
        block_on(out.durable.wait()).unwrap();
        out.base_offset
    }

    /// The records of `bytes` as a Kafka client decodes them, and the offset
    /// after the last batch (empty ones included): where the client reads
    /// next.
    fn decode(bytes: &[u8], from: i64) -> (Vec<Record>, i64) {
        let (mut records, mut next) = (Vec::new(), from);
        for framed in crate::batches(bytes) {
            let (header, batch) = framed.unwrap();
            next = next.max(header.last_offset() + 1);
            let mut batch = Bytes::copy_from_slice(batch);
            records.extend(RecordBatchDecoder::decode(&mut batch).unwrap().records);
        }
        (records, next)
    }

    fn offsets(records: &[Record]) -> Vec<i64> {
        records.iter().map(|r| r.offset).collect()
    }

    /// Each batch of `bytes`: its header and its records section, as the
    /// producer framed the records (decompressed).
    fn sections(bytes: &[u8]) -> Vec<(crate::RecordBatchHeader, Vec<u8>)> {
        crate::batches(bytes)
            .map(|framed| {
                let (header, batch) = framed.unwrap();
                let section = &batch[crate::batch::BATCH_HEADER_BYTES..];
                let records =
                    crate::records::decompress_records(header.codec(), section, 1 << 20).unwrap();
                (header, records.into_owned())
            })
            .collect()
    }

    /// A record's headers as (key, value) bytes, in order.
    fn headers_of(r: &Record) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
        r.headers
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.as_ref().map(|v| v.to_vec())))
            .collect()
    }

    #[test]
    fn a_plain_read_hides_pending_records_and_a_replica_read_copies_them() {
        for codec in [0, 3] {
            let (_dir, _log, p) = fixture(false);
            let mixed = [
                record(b"plain-0", &[(b"h", b"1"), (b"h", b"2")], 1_000),
                record(b"pending-1", &[DELAY], 1_001),
                record(b"plain-2", &[MALFORMED], 1_002),
                record(b"pending-3", &[(b"h", b"3"), AT], 1_003),
                record(b"plain-4", &[], 1_004),
            ];
            let tail = [
                record(b"pending-5", &[DELAY], 1_005),
                record(b"pending-6", &[AT], 1_006),
            ];
            let (a, b) = (make_batch(&mixed, codec), make_batch(&tail, codec));
            assert_eq!(append_batch(&p, a.clone()), 0);
            assert_eq!(append_batch(&p, b.clone()), 5);
            let log_end = p.offsets().log_end;
            assert_eq!(log_end, 7);
            let stored_all = [stored(&a, 0), stored(&b, 5)].concat();
            // The kept records exactly as the producer framed them: same
            // offset and timestamp deltas, duplicate header keys and all.
            let kept: Vec<u8> = [0, 2, 4]
                .into_iter()
                .flat_map(|i| encode_record(i as i64, mixed[i].ts - mixed[0].ts, &mixed[i]))
                .collect();
            let (all, _) = decode(&stored_all, 0);
            let want: Vec<Record> = all
                .into_iter()
                .filter(|r| [0, 2, 4].contains(&r.offset))
                .collect();
            let case = format!("codec {codec}");
            for committed in [false, true] {
                let case = format!("{case}, committed {committed}");
                let out = match committed {
                    false => p.read(0, usize::MAX),
                    true => p.read_committed(0, usize::MAX),
                }
                .unwrap();
                let batches = sections(&out.records);
                assert_eq!(
                    batches.len(),
                    2,
                    "{case}: the rebuilt batch, then an empty one"
                );
                let (h, section) = &batches[0];
                assert_eq!(
                    (h.base_offset, h.last_offset(), h.record_count, h.codec()),
                    (0, 4, 3, codec),
                    "{case}"
                );
                assert_eq!(section, &kept, "{case}: kept records byte for byte");
                let (h, section) = &batches[1];
                assert_eq!(
                    (h.base_offset, h.last_offset(), h.record_count),
                    (5, 6, 0),
                    "{case}: the empty batch spans the pending tail"
                );
                assert!(section.is_empty(), "{case}");
                let (got, next) = decode(&out.records, 0);
                assert_eq!(got, want, "{case}");
                assert_eq!(next, log_end, "{case}");
            }
            // Read in steps of one batch, the consumer still gets there.
            let (got, next) = decode(&p.read(0, 1).unwrap().records, 0);
            assert_eq!((offsets(&got), next), (vec![0, 2, 4], 5), "{case}");
            let (got, next) = decode(&p.read(next, 1).unwrap().records, next);
            assert_eq!((offsets(&got), next), (vec![], log_end), "{case}");
            assert!(p.read(log_end, usize::MAX).unwrap().records.is_empty());
            // A follower copies the partition as stored.
            let replica = p.read_replica(0, usize::MAX).unwrap().records;
            assert_eq!(&replica[..], &stored_all[..], "{case}");
            let replica = p.read_replica(5, usize::MAX).unwrap().records;
            assert_eq!(&replica[..], &stored(&b, 5)[..], "{case}");
        }
    }

    #[test]
    fn a_copy_is_served_and_its_original_stays_hidden() {
        for codec in [0, 3] {
            let case = format!("codec {codec}");
            let (_dir, _log, p) = fixture(false);
            let before = make_batch(&[record(b"before", &[], 1_000)], 0);
            assert_eq!(append_batch(&p, before.clone()), 0);
            let original = record(b"order-17", &[(b"h", b"x"), DELAY], 2_000);
            let original_batch = make_batch(&[original], codec);
            assert_eq!(append_batch(&p, original_batch.clone()), 1);
            let found = p.delay_batches(0, p.offsets().log_end, usize::MAX).unwrap();
            assert_eq!(found.batches.len(), 1, "{case}");
            let (base, stored_original) = &found.batches[0];
            assert_eq!(*base, 1, "{case}");
            assert_eq!(&stored_original[..], &stored(&original_batch, 1)[..]);
            let copy = crate::delay::copy_batch(&[(stored_original, 1)], 9_000).unwrap();
            assert_eq!(append_batch(&p, Bytes::from(copy)), 2, "{case}");

            let (got, next) = decode(&p.read(0, usize::MAX).unwrap().records, 0);
            assert_eq!((offsets(&got), next), (vec![0, 2], 3), "{case}");
            let copy = &got[1];
            assert_eq!(copy.key.as_deref(), Some(&b"order-17"[..]), "{case}");
            assert_eq!(copy.value.as_deref(), Some(&b"value"[..]), "{case}");
            assert_eq!(copy.timestamp, 9_000, "{case}");
            let header = |k: &str, v: &str| (k.as_bytes().to_vec(), Some(v.as_bytes().to_vec()));
            assert_eq!(
                headers_of(copy),
                vec![
                    header("h", "x"),
                    header(crate::DELAY_MS_HEADER, "60000"),
                    header(crate::DELAYED_FROM_HEADER, "1"),
                    header(crate::PRODUCE_TIME_HEADER, "2000"),
                ],
                "{case}"
            );
            let (got, _) = decode(&p.read_committed(1, usize::MAX).unwrap().records, 1);
            assert_eq!(offsets(&got), vec![2], "{case}");
            // A read of the original alone moves the consumer past it.
            let (got, next) = decode(&p.read(1, 1).unwrap().records, 1);
            assert_eq!((offsets(&got), next), (vec![], 2), "{case}");
            // The mover sees both, and which original the copy delivers.
            let found = p.delay_batches(0, p.offsets().log_end, usize::MAX).unwrap();
            let bases: Vec<i64> = found.batches.iter().map(|(base, _)| *base).collect();
            assert_eq!((bases, found.next), (vec![1, 2], 3), "{case}");
            let scan = crate::scan_delays(&found.batches[1].1).unwrap();
            assert!(scan.pending.is_empty(), "{case}");
            assert_eq!(
                scan.copies,
                vec![crate::DelayedCopy {
                    offset_delta: 0,
                    delayed_from: 1
                }],
                "{case}"
            );
            let (got, _) = decode(&p.read_replica(0, usize::MAX).unwrap().records, 0);
            assert_eq!(offsets(&got), vec![0, 1, 2], "{case}");
        }
    }

    #[test]
    fn delay_batches_walks_only_marked_batches_in_bounded_steps() {
        let (_dir, log, p) = fixture(false);
        assert_eq!(p.last_delay_mark(), -1);
        let plain = [record(b"k", &[], 1_000), record(b"k", &[], 1_001)];
        let pending = [record(b"k", &[], 1_000), record(b"d", &[DELAY], 1_001)];
        let mut marked = Vec::new();
        for i in 0..40 {
            let is_marked = [3, 17, 18, 31].contains(&i);
            let batch = make_batch(if is_marked { &pending } else { &plain }, 0);
            let base = append_batch(&p, batch.clone());
            if is_marked {
                marked.push((base, stored(&batch, base)));
            }
        }
        let last_marked = marked.last().unwrap().0;
        assert_eq!(p.last_delay_mark(), last_marked);
        let bases: Vec<i64> = marked.iter().map(|(base, _)| *base).collect();
        let to = p.offsets().log_end;

        // One batch per call at most, following `next` to the end.
        let (mut from, mut calls, mut found) = (0, 0, Vec::new());
        while from < to {
            let step = p.delay_batches(from, to, 1).unwrap();
            assert!(step.batches.len() <= 1, "{:?}", step.batches);
            assert!(step.next > from, "the walk moves on from {from}");
            found.extend(step.batches);
            from = step.next;
            calls += 1;
            assert!(calls <= 40, "the walk ends");
        }
        assert_eq!(from, to);
        assert!(calls >= marked.len(), "{calls} calls");
        let found: Vec<(i64, Vec<u8>)> = found.into_iter().map(|(b, v)| (b, v.to_vec())).collect();
        assert_eq!(found, marked);

        // In one call when the bytes allow.
        let all = p.delay_batches(0, to, usize::MAX).unwrap();
        let got: Vec<i64> = all.batches.iter().map(|(base, _)| *base).collect();
        assert_eq!((got, all.next), (bases.clone(), to));
        // A range: the batch holding `from` counts, one starting at `to` does not.
        let part = p.delay_batches(bases[0] + 1, bases[3], usize::MAX).unwrap();
        let got: Vec<i64> = part.batches.iter().map(|(base, _)| *base).collect();
        assert_eq!((got, part.next), (bases[..3].to_vec(), bases[3]));
        let none = p.delay_batches(bases[3] + 2, to, usize::MAX).unwrap();
        assert!(none.batches.is_empty());
        assert_eq!(none.next, to);
        // Into a buffer the caller keeps: appended after what it holds,
        // each batch where the spans say.
        let mut buf = b"kept".to_vec();
        let crate::DelaySpans { spans, next } =
            p.delay_batches_into((0, to), usize::MAX, &mut buf).unwrap();
        assert_eq!(next, to);
        assert_eq!(&buf[..4], b"kept");
        let got: Vec<(i64, Vec<u8>)> = spans
            .into_iter()
            .map(|(base, span)| (base, buf[span].to_vec()))
            .collect();
        assert_eq!(got, marked);

        append_batch(&p, make_batch(&plain, 0));
        assert_eq!(
            p.last_delay_mark(),
            last_marked,
            "a plain batch marks nothing"
        );

        // However few marked batches, one call looks at a bounded number of
        // index entries.
        let q = log
            .create_partition(pid(1), PartitionConfig::default())
            .unwrap();
        let one = make_batch(&[record(b"k", &[], 1_000)], 0);
        let plain_batches = super::SCAN_ENTRIES_MAX + 8;
        for chunk in (0..plain_batches).collect::<Vec<_>>().chunks(1024) {
            let payload: Vec<u8> = chunk.iter().flat_map(|_| one.iter().copied()).collect();
            append_batch(&q, Bytes::from(payload));
        }
        let base = append_batch(&q, make_batch(&pending, 0));
        assert_eq!(base, plain_batches as i64);
        let to = q.offsets().log_end;
        let first = q.delay_batches(0, to, usize::MAX).unwrap();
        assert!(first.batches.is_empty());
        assert_eq!(first.next, super::SCAN_ENTRIES_MAX as i64);
        let second = q.delay_batches(first.next, to, usize::MAX).unwrap();
        let got: Vec<i64> = second.batches.iter().map(|(base, _)| *base).collect();
        assert_eq!((got, second.next), (vec![base], to));
        assert_eq!(q.last_delay_mark(), base);
        assert_eq!(p.last_delay_mark(), last_marked, "per partition");
    }

    #[test]
    fn recovery_marks_pending_batches_again() {
        for crash in [true, false] {
            let case = format!("crash {crash}");
            let dir = tempfile::tempdir().unwrap();
            let clock = Arc::new(ManualClock::default());
            let config = LogConfig {
                // No index checkpoint: a crash leaves every entry to recovery.
                index_checkpoint_interval_ms: 3_600_000,
                ..LogConfig::default()
            };
            let (replica, read) = {
                let (log, _) = CommitLog::open(dir.path(), config.clone(), clock.clone()).unwrap();
                let p = log
                    .create_partition(pid(0), PartitionConfig::default())
                    .unwrap();
                let plain = [record(b"plain", &[], 1_000)];
                append_batch(&p, make_batch(&plain, 0)); // 0
                let pending = [record(b"p", &[DELAY], 1_000), record(b"p", &[AT], 1_000)];
                append_batch(&p, make_batch(&pending, 0)); // 1..=2
                let mixed = [
                    record(b"plain", &[], 1_000),
                    record(b"p", &[DELAY], 1_000),
                    record(b"plain", &[(b"h", b"v")], 1_000),
                ];
                append_batch(&p, make_batch(&mixed, 3)); // 3..=5
                append_batch(&p, make_batch(&plain, 3)); // 6
                append_batch(&p, make_batch(&pending[..1], 3)); // 7
                let replica = p.read_replica(0, usize::MAX).unwrap().records;
                let read = p.read(0, usize::MAX).unwrap().records;
                if !crash {
                    log.shutdown().unwrap();
                }
                (replica, read)
                // A crash: every handle dropped without a shutdown.
            };
            let (log, report) = CommitLog::open(dir.path(), config, clock).unwrap();
            if crash {
                assert!(report.index_entries_rebuilt >= 5, "{report:?}");
            }
            let p = log.partition(pid(0)).unwrap();
            assert_eq!(p.offsets().high_watermark, 8, "{case}");
            assert_eq!(p.read_replica(0, usize::MAX).unwrap().records, replica);
            let out = p.read(0, usize::MAX).unwrap().records;
            assert_eq!(out, read, "{case}: the same read as before the restart");
            let (got, next) = decode(&out, 0);
            assert_eq!((offsets(&got), next), (vec![0, 3, 5, 6], 8), "{case}");
            let (got, next) = decode(&p.read_committed(1, 1).unwrap().records, 1);
            assert_eq!((offsets(&got), next), (vec![], 3), "{case}");
            let found = p.delay_batches(0, 8, usize::MAX).unwrap();
            let bases: Vec<i64> = found.batches.iter().map(|(base, _)| *base).collect();
            assert_eq!((bases, found.next), (vec![1, 3, 7], 8), "{case}");
            log.shutdown().unwrap();
        }
    }

    #[test]
    fn a_view_hides_pending_records_even_when_they_match_its_tags() {
        for summaries in [true, false] {
            for codec in [0, 3] {
                let case = format!("summaries {summaries}, codec {codec}");
                let (_dir, _log, p) = fixture(summaries);
                let mixed = [
                    record(b"0", &[VIP], 1_000),
                    record(b"1", &[VIP, DELAY], 1_000),
                    record(b"2", &[AT, IRON], 1_000),
                    record(b"3", &[IRON], 1_000),
                    record(b"4", &[VIP, AT], 1_000),
                    record(b"5", &[], 1_000),
                ];
                append_batch(&p, make_batch(&mixed, codec)); // 0..=5
                append_batch(&p, make_batch(&[record(b"6", &[VIP, DELAY], 1_000)], codec));
                assert_eq!(read(&p, 0, "VIP"), (vec![0], 7), "{case}");
                assert_eq!(read(&p, 0, "IRON"), (vec![3], 7), "{case}");
                assert_eq!(read(&p, 0, "VIP || IRON"), (vec![0, 3], 7), "{case}");
                assert_eq!(read(&p, 0, "*"), (vec![0, 3, 5], 7), "{case}");
                assert_eq!(
                    read(&p, 1, "VIP"),
                    (vec![0], 7),
                    "{case}: the batch holding 1"
                );
                assert_eq!(read(&p, 6, "VIP"), (vec![], 7), "{case}");
                let vip = TagExpr::parse("VIP").unwrap();
                let out = p.read_filtered(0, usize::MAX, true, &vip).unwrap();
                let (got, next) = decode(&out.records, 0);
                assert_eq!((offsets(&got), next), (vec![0], 7), "{case}: committed");
                assert_eq!(got[0].key.as_deref(), Some(&b"0"[..]), "{case}");
            }
        }
    }
}
