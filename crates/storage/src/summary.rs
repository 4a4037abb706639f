//! What the queue index keeps of a batch's records, beyond its header: the
//! tag summary views skip by ([`crate::tags`]) and the delay mark that hides
//! pending delayed records ([`crate::delay`]). Both need the records, so a
//! compressed batch is decompressed for them: once for both, and from the
//! payload's bytes before the partition lock is taken, since they depend on
//! nothing the lock guards (offsets are patched later and change neither).
//!
//! A produced payload is read once for everything: [`check_produced`]
//! gives Produce the delay check ([`crate::validate`]'s answer) and the
//! append the summaries, from the same parse of each batch.

use crate::batch::{RecordBatchHeader as H, batches};
use crate::delay::{
    DelayBound, ValidateError, may_hold_delays, scan_parsed, section_may_hold_delays,
    validate_parsed,
};
use crate::format::TAG_SUMMARY_UNKNOWN;
use crate::rebuild::{BatchParseError, ParsedBatch, records_of};
use crate::tags::TAG_FILTER_DECOMPRESSED_BYTES_MAX;

/// A batch's tag summary and delay mark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RecordsSummary {
    /// Whether the tag summary was computed (the partition keeps them).
    pub tags: bool,
    /// The tag summary; [`TAG_SUMMARY_UNKNOWN`] when not computed, for a
    /// control batch, or when the records cannot be read.
    pub tag_summary: u32,
    /// The batch holds a pending delayed record or a delivered copy, or
    /// may and cannot be read ([`crate::delay::delay_mark`]).
    pub delay_mark: bool,
}

impl RecordsSummary {
    /// What a control batch, or one summarized without tags and holding no
    /// delay header, has.
    pub const NONE: Self = Self {
        tags: false,
        tag_summary: TAG_SUMMARY_UNKNOWN,
        delay_mark: false,
    };
}

/// The summary of `batch`, one whole batch, with its tag summary when
/// `tags`. Decompresses it (to at most 64 MiB) only when one of the two
/// may need its records, and walks them only when one does: for the delay
/// mark, when the decompressed section holds a delay header's first bytes.
pub(crate) fn summarize(batch: &[u8], tags: bool) -> RecordsSummary {
    inspect(batch, tags, None).0
}

/// The summary of `batch` and, with `check` (a produced batch: the time
/// and the delay bound), [`crate::validate`]'s answer for it (`Ok(false)`
/// without), from one parse at most.
fn inspect(
    batch: &[u8],
    tags: bool,
    check: Option<(i64, DelayBound<'_>)>,
) -> (RecordsSummary, Result<bool, ValidateError>) {
    let none = RecordsSummary {
        tags,
        ..RecordsSummary::NONE
    };
    if H::parse(batch).is_none_or(|h| h.is_control()) {
        return (none, Ok(false));
    }
    let may_delay = may_hold_delays(batch);
    if !tags && !may_delay {
        return (none, Ok(false));
    }
    // What a batch whose records cannot be read gets: marked when it may
    // hold a delay (its reader then decides), and left to the log.
    let unreadable = |e: BatchParseError, may_delay: bool| {
        let summary = RecordsSummary {
            delay_mark: may_delay,
            ..none
        };
        let checked = match may_delay && check.is_some() {
            true => Err(ValidateError::Unreadable(e)),
            false => Ok(false),
        };
        (summary, checked)
    };
    let (header, records) = match records_of(batch, TAG_FILTER_DECOMPRESSED_BYTES_MAX) {
        Ok(read) => read,
        Err(e) => return unreadable(e, may_delay),
    };
    // Decompressed, a section without a delay header's first bytes holds none.
    let delayed = may_delay && section_may_hold_delays(&records);
    if !tags && !delayed {
        return (none, Ok(false));
    }
    let parsed = match ParsedBatch::from_records(batch, header, records) {
        Ok(parsed) => parsed,
        Err(e) => return unreadable(e, delayed),
    };
    let summary = RecordsSummary {
        tags,
        tag_summary: match tags {
            true => crate::tags::summary_of(&parsed).unwrap_or(TAG_SUMMARY_UNKNOWN),
            false => TAG_SUMMARY_UNKNOWN,
        },
        delay_mark: delayed && scan_parsed(&parsed).map_or(true, |s| !s.is_empty()),
    };
    let checked = match (delayed, check) {
        (true, Some((now_ms, bound))) => validate_parsed(&parsed, now_ms, bound),
        _ => Ok(false),
    };
    (summary, checked)
}

/// The summaries of the batches of a produce or replica `payload`; a
/// payload whose framing breaks stops there (the append refuses it).
pub(crate) fn summarize_payload(payload: &[u8], tags: bool) -> Summaries {
    let mut out = Vec::new();
    let mut at = 0usize;
    for (_, batch) in batches(payload).map_while(Result::ok) {
        out.push(Summarized::new(at, batch, summarize(batch, tags)));
        at += batch.len();
    }
    Summaries(out)
}

/// A produce payload read once before its append ([`check_produced`]).
#[derive(Debug)]
pub struct ProducedCheck {
    /// Per batch, in payload order up to the first that cannot be framed:
    /// its header and [`crate::validate`]'s answer (a batch that cannot be
    /// read is `Unreadable`, for the log to refuse with its own code).
    pub batches: Vec<(H, Result<bool, ValidateError>)>,
    /// What the append's index entries take
    /// ([`crate::CommitLog::append_many_checked`]), so it reads no batch again.
    pub summaries: Summaries,
}

/// Read each batch of `payload`, a produce request's records for one
/// partition, once: [`crate::validate`] at `now_ms` within `bound`, and the
/// summaries of its index entries, tag summaries included when `tags` (the
/// partition keeps them: [`crate::PartitionConfig::tag_summaries`]).
pub fn check_produced(
    payload: &[u8],
    now_ms: i64,
    bound: DelayBound<'_>,
    tags: bool,
) -> ProducedCheck {
    let mut checked = Vec::new();
    let mut summaries = Vec::new();
    let mut at = 0usize;
    for (header, batch) in batches(payload).map_while(Result::ok) {
        let (summary, answer) = inspect(batch, tags, Some((now_ms, bound)));
        summaries.push(Summarized::new(at, batch, summary));
        checked.push((header, answer));
        at += batch.len();
    }
    ProducedCheck {
        batches: checked,
        summaries: Summaries(summaries),
    }
}

/// One batch's summary, with what identifies the batch it was made from.
#[derive(Debug, Clone, Copy)]
struct Summarized {
    /// Where the batch starts in its payload.
    start: usize,
    /// Its length.
    len: usize,
    /// Its CRC32C field, which covers its records.
    crc: u32,
    summary: RecordsSummary,
}

impl Summarized {
    fn new(start: usize, batch: &[u8], summary: RecordsSummary) -> Self {
        Self {
            start,
            len: batch.len(),
            crc: H::parse(batch).map_or(0, |h| h.crc),
            summary,
        }
    }
}

/// A payload's summaries, computed before the lock. Only this crate makes
/// them, from the bytes they summarize.
#[derive(Debug, Default)]
pub struct Summaries(Vec<Summarized>);

impl Summaries {
    /// The summary of the batch `src` at `start` of the payload, with tags
    /// when `tags`: the one computed before the lock when it is for these
    /// bytes (position, length and CRC field) and this setting, else
    /// computed now.
    pub(crate) fn get(&self, start: usize, src: &[u8], tags: bool) -> RecordsSummary {
        let crc = H::parse(src).map_or(0, |h| h.crc);
        let found = self
            .0
            .binary_search_by_key(&start, |s| s.start)
            .ok()
            .and_then(|i| self.0.get(i))
            .filter(|s| s.len == src.len() && s.crc == crc && s.summary.tags == tags);
        match found {
            Some(s) => s.summary,
            None => summarize(src, tags),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::control_batch;
    use crate::delay::delay_mark;
    use crate::producer::TxnMarker;
    use crate::records::test_records::{Rec, make_batch};
    use crate::tags::tag_summary;

    fn rec<'a>(value: &'a str, headers: &'a [(&'a [u8], &'a [u8])]) -> Rec<'a> {
        Rec {
            key: Some(b"k"),
            value: Some(value.as_bytes()),
            headers,
            ts: 1_000,
        }
    }

    /// Plain, tagged, pending and copied records, each codec, and a marker.
    fn batches() -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for codec in [0, 1, 2, 3, 4] {
            out.push(make_batch(&[rec("a", &[(b"x", b"1")])], codec).to_vec());
            out.push(make_batch(&[rec("b", &[(b"weir.tag", b"VIP")])], codec).to_vec());
            out.push(
                make_batch(
                    &[
                        rec("c", &[(b"weir.tag", b"GOLD")]),
                        rec("d", &[(b"weir.delay-ms", b"50")]),
                    ],
                    codec,
                )
                .to_vec(),
            );
            let copy: &[(&[u8], &[u8])] = &[
                (b"weir.delay-ms", b"50"),
                (b"weir.delayed-from-offset", b"3"),
                (b"weir.produce-time-ms", b"900"),
            ];
            out.push(make_batch(&[rec("e", copy)], codec).to_vec());
        }
        let marker = TxnMarker {
            commit: false,
            coordinator_epoch: 1,
        };
        out.push(control_batch(7, 0, marker, 1_000).unwrap().to_vec());
        out
    }

    /// What the index kept before summaries were computed ahead of the lock.
    fn separately(batch: &[u8], tags: bool) -> (u32, bool) {
        let control = H::parse(batch).is_some_and(|h| h.is_control());
        let summary = match tags && !control {
            true => tag_summary(batch).unwrap_or(TAG_SUMMARY_UNKNOWN),
            false => TAG_SUMMARY_UNKNOWN,
        };
        (summary, !control && delay_mark(batch))
    }

    #[test]
    fn one_parse_gives_what_the_tag_summary_and_the_delay_mark_give_apart() {
        for batch in batches() {
            let mut variants = vec![batch.clone()];
            for cut in (0..batch.len()).step_by(7) {
                variants.push(batch[..cut].to_vec());
            }
            for at in (H::BYTES..batch.len()).step_by(3) {
                let mut flipped = batch.clone();
                flipped[at] ^= 0x5a;
                variants.push(flipped);
            }
            for b in &variants {
                for tags in [false, true] {
                    let s = summarize(b, tags);
                    assert_eq!(s.tags, tags);
                    assert_eq!((s.tag_summary, s.delay_mark), separately(b, tags), "{b:?}");
                }
            }
        }
    }

    #[test]
    fn a_payloads_summaries_are_found_by_position_and_computed_when_not() {
        let all = batches();
        let payload: Vec<u8> = all.concat();
        let summaries = summarize_payload(&payload, true);
        assert_eq!(summaries.0.len(), all.len());
        let mut at = 0;
        for b in &all {
            assert_eq!(summaries.get(at, b, true), summarize(b, true));
            // Another setting, or other bytes at that position, are computed.
            assert_eq!(summaries.get(at, b, false), summarize(b, false));
            let other = &all[2];
            assert_eq!(
                summaries.get(at, other, true).tag_summary,
                summarize(other, true).tag_summary
            );
            at += b.len();
        }
        let broken = summarize_payload(&payload[..payload.len() - 1], true);
        assert_eq!(
            broken.0.len(),
            all.len() - 1,
            "a torn last batch is left out"
        );
        // Another batch of the same length at the same place (its CRC
        // differs) is summarized anew.
        let near: &[(&[u8], &[u8])] = &[(b"weir.delay-mx", b"9")];
        let delayed: &[(&[u8], &[u8])] = &[(b"weir.delay-ms", b"9")];
        let plain = make_batch(&[rec("a", near)], 0).to_vec();
        let pending = make_batch(&[rec("a", delayed)], 0).to_vec();
        assert_eq!(plain.len(), pending.len());
        let made = summarize_payload(&plain, false);
        assert!(!made.get(0, &plain, false).delay_mark);
        assert!(made.get(0, &pending, false).delay_mark);
    }

    #[test]
    fn a_produced_payload_checked_once_answers_as_validate_and_summarize_do() {
        let bound = DelayBound {
            max_ms: 60_000,
            config: "weir.delay.max.ms",
        };
        let far: &[(&[u8], &[u8])] = &[(b"weir.delay-ms", b"600000")];
        let bad: &[(&[u8], &[u8])] = &[(b"weir.delay-ms", b"soon")];
        let mut all = batches();
        for codec in [0, 3] {
            all.push(make_batch(&[rec("f", far), rec("g", bad)], codec).to_vec());
        }
        let payload: Vec<u8> = all.concat();
        for tags in [false, true] {
            let checked = check_produced(&payload, 1_000, bound, tags);
            assert_eq!(checked.batches.len(), all.len());
            let mut at = 0;
            for (b, (header, answer)) in all.iter().zip(&checked.batches) {
                assert_eq!(Some(*header), H::parse(b));
                assert_eq!(*answer, crate::validate(b, 1_000, bound), "{b:?}");
                assert_eq!(checked.summaries.get(at, b, tags), summarize(b, tags));
                at += b.len();
            }
            assert!(checked.batches.iter().any(|(_, a)| *a == Ok(true)));
            assert!(checked.batches.iter().any(|(_, a)| a.is_err()));
        }
    }
}
