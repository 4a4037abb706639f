//! Tag-filtered reads of one partition, for views: [`crate::tags`] decides
//! which records match; this module decides which batches to read at all,
//! and what the reader gets back.
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
//! answer ends with a batch of no records spanning them (as compaction
//! leaves a producer's emptied last batch), which every Kafka client steps
//! over to the offset after it.
//!
//! Work per read is bounded: at most [`SCAN_ENTRIES_MAX`] index entries are
//! looked at and at most the read limit of source bytes is read, whatever
//! the filter keeps.

use bytes::Bytes;

use crate::batch::RecordBatchHeader;
use crate::format::IndexEntry;
use crate::log::lock;
use crate::partition::{
    LOCATE_CHUNK_ENTRIES, PartitionInner, locate_entries, read_located, read_start,
};
use crate::store::Store;
use crate::tags::{Filtered, TagExpr, filter_batch, skipped_range_batch};
use crate::{ReadBound, ReadError, ReadOutcome};

/// The most index entries one filtered read looks at. A view whose tags are
/// rare answers after this many batches with an empty batch spanning them,
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

/// Read from `offset` the records `filter` matches, up to `max_bytes` of
/// source batches read (at least one batch), bounded like
/// [`crate::Partition::read`] by `bound`.
pub(crate) fn read_filtered(
    store: &Store,
    part: &PartitionInner,
    (offset, max_bytes): (i64, usize),
    bound: ReadBound,
    filter: &TagExpr,
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
        let mut scanned = 0usize;
        let mut slot = from;
        'chunks: while scanned < SCAN_ENTRIES_MAX {
            let chunk = st
                .index()
                .read_range(slot, LOCATE_CHUNK_ENTRIES, store.index_io())?;
            if chunk.is_empty() {
                break;
            }
            slot += chunk.len() as u64;
            for e in chunk {
                if e.base_offset >= end || scanned >= SCAN_ENTRIES_MAX {
                    break 'chunks;
                }
                let control = e.attributes & RecordBatchHeader::CONTROL != 0;
                if control || filter.may_match(e.tag_summary) {
                    let size = e.size as usize;
                    if !wanted.is_empty() && read_bytes + size > limit {
                        break 'chunks;
                    }
                    read_bytes += size;
                    wanted.push(e);
                    steps.push(Step::Read(e));
                    if read_bytes >= limit {
                        break 'chunks;
                    }
                } else {
                    skip(&mut steps, e.base_offset, e.last_offset(), e.max_timestamp);
                }
                scanned += 1;
            }
        }
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
                let kept = match filter_batch(batch, filter) {
                    Ok(Filtered::Whole) => Some(batch.to_vec()),
                    Ok(Filtered::Part(rebuilt)) => Some(rebuilt),
                    Ok(Filtered::Skip) => None,
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
}
