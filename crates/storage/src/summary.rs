//! What the queue index keeps of a batch's records, beyond its header: the
//! tag summary views skip by ([`crate::tags`]) and the delay mark that hides
//! pending delayed records ([`crate::delay`]). Both need the records, so a
//! compressed batch is decompressed for them: once for both, and from the
//! payload's bytes before the partition lock is taken, since they depend on
//! nothing the lock guards (offsets are patched later and change neither).

use crate::batch::RecordBatchHeader as H;
use crate::format::TAG_SUMMARY_UNKNOWN;
use crate::rebuild::ParsedBatch;
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
/// needs its records.
pub(crate) fn summarize(batch: &[u8], tags: bool) -> RecordsSummary {
    let none = RecordsSummary {
        tags,
        ..RecordsSummary::NONE
    };
    if H::parse(batch).is_none_or(|h| h.is_control()) {
        return none;
    }
    let may_delay = crate::delay::may_hold_delays(batch);
    if !tags && !may_delay {
        return none;
    }
    let Ok(parsed) = ParsedBatch::parse(batch, TAG_FILTER_DECOMPRESSED_BYTES_MAX) else {
        return RecordsSummary {
            delay_mark: may_delay,
            ..none
        };
    };
    RecordsSummary {
        tags,
        tag_summary: match tags {
            true => crate::tags::summary_of(&parsed).unwrap_or(TAG_SUMMARY_UNKNOWN),
            false => TAG_SUMMARY_UNKNOWN,
        },
        delay_mark: may_delay && crate::delay::scan_parsed(&parsed).map_or(true, |s| !s.is_empty()),
    }
}

/// The summaries of the batches of a produce or replica `payload`, by
/// where each starts and its length; a payload whose framing breaks stops
/// there (the append refuses it, or summarizes what it finds missing).
pub(crate) fn summarize_payload(payload: &[u8], tags: bool) -> Summaries {
    let mut out = Vec::new();
    let mut at = 0usize;
    while let Some(rest) = payload.get(at..) {
        let Some(len) = H::parse(rest).and_then(|h| h.batch_bytes()) else {
            break;
        };
        let Some(batch) = rest.get(..len) else {
            break;
        };
        out.push((at, len, summarize(batch, tags)));
        at += len;
    }
    Summaries(out)
}

/// A payload's summaries, computed before the lock.
#[derive(Debug, Default)]
pub(crate) struct Summaries(Vec<(usize, usize, RecordsSummary)>);

impl Summaries {
    /// The summary of the batch at `start..start + len` of the payload,
    /// `src`, with tags when `tags`: the one computed before the lock when
    /// it is for these bytes and this setting, else computed now.
    pub(crate) fn get(&self, start: usize, src: &[u8], tags: bool) -> RecordsSummary {
        let found = self
            .0
            .binary_search_by_key(&start, |(at, _, _)| *at)
            .ok()
            .and_then(|i| self.0.get(i))
            .filter(|(_, len, s)| *len == src.len() && s.tags == tags);
        match found {
            Some((_, _, summary)) => *summary,
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
    }
}
