//! Tag filtering for views: RocketMQ-style tags carried in Kafka record
//! headers. A producer tags a record with a [`TAG_HEADER`] header (its value
//! is the tag); a view names a tag expression ([`TagExpr`], such as
//! `VIP || GOLD`), and a fetch from the view gets only the records it
//! matches.
//!
//! A stored batch is never decoded into owned records: [`filter_batch`]
//! reads each record's headers in place and either passes the batch whole,
//! skips it, or rebuilds it from the raw bytes of its matching records
//! ([`crate::rebuild`], shared with log compaction), so kept records keep
//! their offsets and duplicate header keys survive byte for byte.
//!
//! [`tag_summary`] gives a batch's tags as a 32-bit Bloom filter that the
//! queue index can keep per batch; [`TagExpr::may_match`] tells from it
//! alone whether a batch can hold a match, so a fetch skips the rest
//! without reading them. A run of skipped batches can be stood in for by
//! one empty control batch ([`skipped_range_batch`]), so a consumer moves
//! past it.

use std::fmt;
use std::str::FromStr;

use crate::batch::RecordBatchHeader as H;
use crate::rebuild::{BatchParseError, ParsedBatch, rebuild};
use crate::records::{RecordFrame, RecordFramingError, RecordHeader, record_headers};

/// The record header key that carries a record's tag (its value). A record
/// may carry it more than once: it then has every one of those tags.
pub const TAG_HEADER: &str = "weir.tag";
/// The most tags one expression may name.
pub const TAG_EXPR_TAGS_MAX: usize = 64;
/// The longest expression accepted, in bytes.
pub const TAG_EXPR_BYTES_MAX: usize = 4096;
/// The most bytes one batch's records may decompress to for filtering or
/// for its summary (compaction's bound); a batch past it is an error.
pub(crate) const TAG_FILTER_DECOMPRESSED_BYTES_MAX: usize = 64 << 20;
/// What separates the tags of an expression.
const TAG_SEPARATOR: &str = "||";
/// The expression that matches every record.
const ALL_TAGS: &str = "*";

/// Why a tag expression was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TagExprError {
    /// The expression is longer than [`TAG_EXPR_BYTES_MAX`].
    #[error("tag expression of {bytes} bytes: at most {bytes_max} bytes are allowed")]
    TooLong {
        /// The expression's length.
        bytes: usize,
        /// [`TAG_EXPR_BYTES_MAX`].
        bytes_max: usize,
    },
    /// The expression names more than [`TAG_EXPR_TAGS_MAX`] tags.
    #[error("tag expression {expr:?}: more than {tags_max} tags")]
    TooManyTags {
        /// The expression as given.
        expr: String,
        /// [`TAG_EXPR_TAGS_MAX`].
        tags_max: usize,
    },
    /// Nothing but whitespace before the first `||`, between two, or after
    /// the last.
    #[error("tag expression {expr:?}: empty tag {}", empty_tag_place(.position))]
    EmptyTag {
        /// The expression as given.
        expr: String,
        /// Which tag (from 0) is empty.
        position: usize,
    },
    /// `*` stands among other tags; it means every record, so it must stand alone.
    #[error("tag expression {expr:?}: \"*\" matches every record and must stand alone")]
    WildcardAmongTags {
        /// The expression as given.
        expr: String,
    },
}

/// Where an empty tag sits, for [`TagExprError::EmptyTag`]'s message.
fn empty_tag_place(position: &usize) -> &'static str {
    if *position == 0 {
        "before \"||\""
    } else {
        "after \"||\""
    }
}

/// One tag of an expression and its summary bits.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Tag {
    name: Box<str>,
    /// [`tag_bits`] of the name.
    bits: u32,
}

/// A view's tag expression in RocketMQ's syntax: `*` (or an empty or
/// whitespace-only expression) matches every record; otherwise tags
/// separated by `||`, each trimmed of ASCII whitespace, and a record
/// matches when any of its [`TAG_HEADER`] headers has a non-null value
/// equal (byte for byte, the tag's UTF-8) to any of them. A record without
/// the header matches only `*`. Unlike RocketMQ, an empty tag (`A || || B`,
/// `A ||`) is an error rather than ignored, and a repeated tag counts once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagExpr {
    /// Distinct tags in the order written; empty for `*`.
    tags: Vec<Tag>,
}

impl TagExpr {
    /// The expression that matches every record (`*`).
    pub fn all() -> Self {
        Self { tags: Vec::new() }
    }

    /// Parse `expr`, within [`TAG_EXPR_BYTES_MAX`] bytes and
    /// [`TAG_EXPR_TAGS_MAX`] tags.
    pub fn parse(expr: &str) -> Result<Self, TagExprError> {
        if expr.len() > TAG_EXPR_BYTES_MAX {
            return Err(TagExprError::TooLong {
                bytes: expr.len(),
                bytes_max: TAG_EXPR_BYTES_MAX,
            });
        }
        let trimmed = trim(expr);
        if trimmed.is_empty() || trimmed == ALL_TAGS {
            return Ok(Self::all());
        }
        let mut tags: Vec<Tag> = Vec::new();
        for (position, tag) in expr.split(TAG_SEPARATOR).enumerate() {
            if position >= TAG_EXPR_TAGS_MAX {
                return Err(TagExprError::TooManyTags {
                    expr: expr.to_owned(),
                    tags_max: TAG_EXPR_TAGS_MAX,
                });
            }
            let tag = trim(tag);
            if tag.is_empty() {
                return Err(TagExprError::EmptyTag {
                    expr: expr.to_owned(),
                    position,
                });
            }
            if tag == ALL_TAGS {
                return Err(TagExprError::WildcardAmongTags {
                    expr: expr.to_owned(),
                });
            }
            if !tags.iter().any(|t| &*t.name == tag) {
                tags.push(Tag {
                    name: tag.into(),
                    bits: tag_bits(tag.as_bytes()),
                });
            }
        }
        Ok(Self { tags })
    }

    /// Whether this is `*`, which matches every record.
    pub fn is_all(&self) -> bool {
        self.tags.is_empty()
    }

    /// The distinct tags named, in the order written; none for `*`.
    pub fn tags(&self) -> impl Iterator<Item = &str> {
        self.tags.iter().map(|t| &*t.name)
    }

    /// Whether a batch whose [`tag_summary`] is `summary` may hold a record
    /// this expression matches: always for `*`; otherwise when both bits of
    /// some tag are set. False means it certainly holds none; an unknown
    /// summary must be passed as `u32::MAX`.
    pub fn may_match(&self, summary: u32) -> bool {
        self.is_all() || self.tags.iter().any(|t| summary & t.bits == t.bits)
    }

    /// Whether `tag`, a [`TAG_HEADER`] value, is one of the tags named.
    fn names(&self, tag: &[u8]) -> bool {
        self.tags.iter().any(|t| t.name.as_bytes() == tag)
    }

    /// Whether the record `frame` of `records` matches. Every header is
    /// read, so a malformed record is an error whatever the expression.
    pub(crate) fn matches(
        &self,
        records: &[u8],
        frame: &RecordFrame,
    ) -> Result<bool, RecordFramingError> {
        let mut matched = false;
        for header in record_headers(records, frame) {
            if let Some(tag) = tag_value(records, &header?) {
                matched = matched || self.names(tag);
            }
        }
        Ok(matched)
    }
}

impl FromStr for TagExpr {
    type Err = TagExprError;

    fn from_str(expr: &str) -> Result<Self, TagExprError> {
        Self::parse(expr)
    }
}

impl fmt::Display for TagExpr {
    /// The canonical form: `*`, or the distinct tags joined by ` || `.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_all() {
            return f.write_str(ALL_TAGS);
        }
        for (i, tag) in self.tags().enumerate() {
            if i > 0 {
                write!(f, " {TAG_SEPARATOR} ")?;
            }
            f.write_str(tag)?;
        }
        Ok(())
    }
}

/// `s` without leading or trailing ASCII whitespace.
fn trim(s: &str) -> &str {
    s.trim_matches(|c: char| c.is_ascii_whitespace())
}

/// The value of `header` when it is a [`TAG_HEADER`] with a non-null value.
fn tag_value<'a>(records: &'a [u8], header: &RecordHeader) -> Option<&'a [u8]> {
    if records.get(header.key.clone())? != TAG_HEADER.as_bytes() {
        return None;
    }
    records.get(header.value.clone()?)
}

/// The two summary bits of one tag (an on-disk format: see [`tag_summary`]).
fn tag_bits(tag: &[u8]) -> u32 {
    let h = crc32c::crc32c(tag);
    (1 << (h & 31)) | (1 << ((h >> 16) & 31))
}

/// A batch's tag summary: a 32-bit Bloom filter of the tags its records
/// carry, for the queue index to keep per batch. The rule is an on-disk
/// format and must not change: for each record, for each [`TAG_HEADER`]
/// header with a non-null value `v` (empty included), with
/// `h = crc32c(v)` (CRC-32C, Castagnoli), set bit `h & 31` and bit
/// `(h >> 16) & 31` (bit 0 the least significant; the two may be the same
/// bit). Records without the header set nothing, so a batch with no tagged
/// record has summary 0. A control batch (transaction markers, which every
/// view receives) has `u32::MAX`.
///
/// `None` when the batch cannot be read: a short or misframed batch,
/// records that do not decompress or decompress past 64 MiB, or malformed
/// record or header framing. The caller then stores "unknown", which must
/// behave like `u32::MAX` (every expression may match).
pub fn tag_summary(batch: &[u8]) -> Option<u32> {
    if H::parse(batch)?.is_control() {
        return Some(u32::MAX);
    }
    summary_of(&ParsedBatch::parse(batch, TAG_FILTER_DECOMPRESSED_BYTES_MAX).ok()?)
}

/// [`tag_summary`] of a data batch already parsed.
pub(crate) fn summary_of(parsed: &ParsedBatch<'_>) -> Option<u32> {
    let mut summary = 0u32;
    for frame in &parsed.frames {
        for h in record_headers(&parsed.records, frame) {
            if let Some(tag) = tag_value(&parsed.records, &h.ok()?) {
                summary |= tag_bits(tag);
            }
        }
    }
    Some(summary)
}

/// What a filtered fetch (a view's, or one hiding pending delayed records)
/// sends of one stored batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filtered {
    /// The batch as stored: every record is kept, it is a control batch, or
    /// the expression is `*`.
    Whole,
    /// No record is kept.
    Skip,
    /// The batch rebuilt with only its kept records (same base offset,
    /// `lastOffsetDelta` and record offsets; new record count, length, max
    /// timestamp and CRC; recompressed with its own codec).
    Part(Vec<u8>),
}

/// Why a batch could not be filtered. The batch was stored, so this is
/// corruption or a batch past the filter's bound; the caller decides
/// whether to send it whole or fail the fetch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// The batch's records or headers cannot be read.
    #[error("a batch cannot be read for filtering: {0}")]
    Unreadable(#[from] BatchParseError),
    /// The kept records could not be recompressed with the batch's codec.
    #[error("the kept records of a batch could not be recompressed with codec {codec}")]
    Recompress {
        /// Kafka's codec id.
        codec: i16,
    },
}

/// What a fetch from a view with expression `expr` sends of `batch`, one
/// whole stored batch. `*` passes every batch without reading it, and a
/// control batch always passes whole. Records are decompressed to at most
/// 64 MiB; nothing else is allocated beyond the record framing and, for
/// [`Filtered::Part`], the rebuilt batch.
pub fn filter_batch(batch: &[u8], expr: &TagExpr) -> Result<Filtered, FilterError> {
    if expr.is_all() {
        return Ok(Filtered::Whole);
    }
    filter_records(batch, |records, frame| expr.matches(records, frame))
}

/// What a filtered fetch sends of `batch`, one whole stored batch, keeping
/// the records `keep` accepts (it is given the decompressed records section
/// and one record's framing). A control batch passes whole without its
/// records being read; otherwise records are decompressed to at most
/// 64 MiB, and an error of `keep` fails the batch.
pub(crate) fn filter_records(
    batch: &[u8],
    mut keep: impl FnMut(&[u8], &RecordFrame) -> Result<bool, RecordFramingError>,
) -> Result<Filtered, FilterError> {
    let header = H::parse(batch).ok_or(BatchParseError::ShortHeader { bytes: batch.len() })?;
    if header.is_control() {
        return Ok(Filtered::Whole);
    }
    let parsed = ParsedBatch::parse(batch, TAG_FILTER_DECOMPRESSED_BYTES_MAX)?;
    let mut kept = Vec::with_capacity(parsed.frames.len());
    for (i, frame) in parsed.frames.iter().enumerate() {
        if keep(&parsed.records, frame).map_err(BatchParseError::from)? {
            kept.push(i);
        }
    }
    if kept.len() == parsed.frames.len() {
        return Ok(Filtered::Whole);
    }
    if kept.is_empty() {
        return Ok(Filtered::Skip);
    }
    let rebuilt = rebuild(&parsed, &kept).ok_or(FilterError::Recompress {
        codec: header.codec(),
    })?;
    Ok(Filtered::Part(rebuilt))
}

/// A RecordBatch v2 with no records (the 61-byte header only) covering
/// offsets `base_offset..=last_offset`, for a fetch to send in place of a
/// run of skipped batches so the consumer's position moves past them.
/// It is a control batch (attributes 0x20: no codec, `CreateTime`, not
/// transactional) with no producer (id, epoch and base sequence -1): every
/// Kafka client steps over a control batch without handing anything to
/// the application, and librdkafka counts it as a reason for a response
/// to hold no message, where an empty data batch alone reads to it as a
/// fetch size too small (after ten such answers it reports
/// MSG_SIZE_TOO_LARGE to the application). Record count 0, base and max
/// timestamp `max_timestamp`, partition leader epoch -1 ("none"); the
/// leader epoch is outside the CRC, so the caller may patch in the skipped
/// batches' epoch (bytes 12..16). The CRC32C covers bytes 21.. as in every
/// batch.
///
/// `None` unless `base_offset <= last_offset` and the span fits
/// `lastOffsetDelta` (an i32); the caller splits a longer run.
pub fn skipped_range_batch(
    base_offset: i64,
    last_offset: i64,
    max_timestamp: i64,
) -> Option<Vec<u8>> {
    empty_batch(base_offset, last_offset, max_timestamp, H::CONTROL)
}

/// A RecordBatch v2 header with no records and these `attributes`, as
/// [`skipped_range_batch`] describes it otherwise.
pub(crate) fn empty_batch(
    base_offset: i64,
    last_offset: i64,
    max_timestamp: i64,
    attributes: i16,
) -> Option<Vec<u8>> {
    let last_offset_delta = last_offset
        .checked_sub(base_offset)
        .and_then(|d| i32::try_from(d).ok())
        .filter(|d| *d >= 0)?;
    let batch_length = i32::try_from(H::BYTES - H::LOG_OVERHEAD_BYTES).ok()?;
    // The CRC-covered part: attributes to the record count.
    let mut covered = Vec::with_capacity(H::BYTES - H::ATTRIBUTES_AT);
    covered.extend_from_slice(&attributes.to_be_bytes());
    covered.extend_from_slice(&last_offset_delta.to_be_bytes());
    covered.extend_from_slice(&max_timestamp.to_be_bytes());
    covered.extend_from_slice(&max_timestamp.to_be_bytes());
    covered.extend_from_slice(&(-1i64).to_be_bytes());
    covered.extend_from_slice(&(-1i16).to_be_bytes());
    covered.extend_from_slice(&(-1i32).to_be_bytes());
    covered.extend_from_slice(&0i32.to_be_bytes());
    let mut out = Vec::with_capacity(H::BYTES);
    out.extend_from_slice(&base_offset.to_be_bytes());
    out.extend_from_slice(&batch_length.to_be_bytes());
    out.extend_from_slice(&(-1i32).to_be_bytes());
    out.push(2);
    out.extend_from_slice(&crc32c::crc32c(&covered).to_be_bytes());
    out.extend_from_slice(&covered);
    debug_assert_eq!(out.len(), H::BYTES);
    Some(out)
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use kafka_protocol::records::RecordBatchDecoder;

    use super::*;
    use crate::batch::{control_batch, parse_replica_payload};
    use crate::producer::TxnMarker;
    use crate::records::test_records::{
        Rec, encode_record, encode_record_parts, length_framed, make_batch, varint, wrap_records,
    };

    type Headers<'a> = &'a [(&'a [u8], &'a [u8])];

    const VIP: Headers = &[(b"weir.tag", b"VIP")];
    const GOLD: Headers = &[(b"weir.tag", b"GOLD")];
    const PLAIN: Headers = &[(b"x", b"VIP")];
    /// Two `x` headers and two tags, one of them VIP.
    const DUPLICATES: Headers = &[
        (b"x", b"1"),
        (b"weir.tag", b"BRONZE"),
        (b"x", b"1"),
        (b"weir.tag", b"VIP"),
    ];
    const CODECS: [i16; 5] = [0, 1, 2, 3, 4];

    fn expr(s: &str) -> TagExpr {
        TagExpr::parse(s).unwrap()
    }

    fn tagged<'a>(value: &'a str, headers: Headers<'a>, ts: i64) -> Rec<'a> {
        Rec {
            key: None,
            value: Some(value.as_bytes()),
            headers,
            ts,
        }
    }

    /// Records 0..5: VIP, untagged, GOLD, duplicates (BRONZE and VIP), GOLD.
    fn mixed(codec: i16) -> Bytes {
        make_batch(
            &[
                tagged("r0", VIP, 1_000),
                tagged("r1", PLAIN, 5_000),
                tagged("r2", GOLD, 2_000),
                tagged("r3", DUPLICATES, 3_000),
                tagged("r4", GOLD, 4_000),
            ],
            codec,
        )
    }

    fn marker_batch() -> Bytes {
        let marker = TxnMarker {
            commit: true,
            coordinator_epoch: 3,
        };
        control_batch(7, 0, marker, 1_000).unwrap()
    }

    /// `Part`'s bytes, checked: a valid batch (length, CRC, independent
    /// decoder) at the same base offset and `lastOffsetDelta` as `original`.
    fn part(filtered: Filtered, original: &[u8]) -> Vec<u8> {
        let Filtered::Part(b) = filtered else {
            panic!("not a part: {filtered:?}");
        };
        let (h, was) = (H::parse(&b).unwrap(), H::parse(original).unwrap());
        assert_eq!(h.batch_bytes(), Some(b.len()));
        assert_eq!(h.crc, crc32c::crc32c(&b[H::ATTRIBUTES_AT..]));
        assert_eq!(
            (h.base_offset, h.last_offset_delta, h.base_timestamp),
            (was.base_offset, was.last_offset_delta, was.base_timestamp)
        );
        assert_eq!(h.codec(), was.codec());
        assert!(parse_replica_payload(&b).is_ok(), "the log would take it");
        let decoded = RecordBatchDecoder::decode(&mut Bytes::from(b.clone())).unwrap();
        assert_eq!(decoded.records.len() as i32, h.record_count);
        b
    }

    /// The raw bytes and offset delta of each record of `batch`.
    fn records(batch: &[u8]) -> Vec<(i64, Vec<u8>)> {
        let parsed = ParsedBatch::parse(batch, 1 << 20).unwrap();
        (0..parsed.frames.len())
            .map(|i| {
                (
                    parsed.frames[i].offset_delta,
                    parsed.record(i).unwrap().to_vec(),
                )
            })
            .collect()
    }

    #[test]
    fn expressions_parse_to_their_canonical_form() {
        for (given, canonical) in [
            ("*", "*"),
            ("", "*"),
            ("  \t\n", "*"),
            (" * ", "*"),
            ("VIP", "VIP"),
            ("VIP||GOLD", "VIP || GOLD"),
            ("  VIP ||\tGOLD  ", "VIP || GOLD"),
            ("VIP || GOLD || VIP", "VIP || GOLD"),
            ("Big Spender || a|b", "Big Spender || a|b"),
            ("标签 || ü", "标签 || ü"),
        ] {
            let e = expr(given);
            assert_eq!(e.to_string(), canonical, "{given:?}");
            assert_eq!(e.is_all(), canonical == "*", "{given:?}");
            assert_eq!(expr(canonical), e, "the canonical form parses back");
        }
        assert_eq!(expr("A || B").tags().collect::<Vec<_>>(), ["A", "B"]);
        assert_eq!("GOLD".parse::<TagExpr>(), Ok(expr("GOLD")));
        assert!(TagExpr::all().is_all());
    }

    #[test]
    fn empty_tags_and_a_wildcard_among_tags_are_refused_with_the_expression() {
        for (given, position) in [("A || ", 1), ("|| A", 0), ("A || || B", 1), ("||", 0)] {
            assert_eq!(
                TagExpr::parse(given),
                Err(TagExprError::EmptyTag {
                    expr: given.to_owned(),
                    position
                }),
                "{given:?}"
            );
        }
        assert_eq!(
            TagExpr::parse("A || ").unwrap_err().to_string(),
            r#"tag expression "A || ": empty tag after "||""#
        );
        assert_eq!(
            TagExpr::parse(" ||A").unwrap_err().to_string(),
            r#"tag expression " ||A": empty tag before "||""#
        );
        assert_eq!(
            TagExpr::parse("A || *").unwrap_err().to_string(),
            r#"tag expression "A || *": "*" matches every record and must stand alone"#
        );
    }

    #[test]
    fn expressions_are_bounded_in_tags_and_bytes() {
        let tags = |n: usize| (0..n).map(|i| format!("t{i}")).collect::<Vec<_>>();
        let most = tags(TAG_EXPR_TAGS_MAX).join("||");
        assert_eq!(expr(&most).tags().count(), TAG_EXPR_TAGS_MAX);
        let over = tags(TAG_EXPR_TAGS_MAX + 1).join("||");
        assert!(matches!(
            TagExpr::parse(&over),
            Err(TagExprError::TooManyTags { tags_max: 64, .. })
        ));
        let longest = "x".repeat(TAG_EXPR_BYTES_MAX);
        assert!(TagExpr::parse(&longest).is_ok());
        let long = "x".repeat(TAG_EXPR_BYTES_MAX + 1);
        let err = TagExpr::parse(&long).unwrap_err();
        assert_eq!(
            err,
            TagExprError::TooLong {
                bytes: 4097,
                bytes_max: 4096
            }
        );
        assert!(err.to_string().len() < 100, "the message does not echo it");
    }

    #[test]
    fn the_summary_sets_two_crc32c_bits_per_tag() {
        let bits = |tag: &[u8]| {
            let h = crc32c::crc32c(tag);
            (1u32 << (h & 31)) | (1u32 << ((h >> 16) & 31))
        };
        let vip = make_batch(&[tagged("v", VIP, 1)], 0);
        assert_eq!(tag_summary(&vip), Some(bits(b"VIP")));
        assert_eq!(tag_bits(b"VIP"), bits(b"VIP"));
        for codec in CODECS {
            let all = bits(b"VIP") | bits(b"GOLD") | bits(b"BRONZE");
            assert_eq!(tag_summary(&mixed(codec)), Some(all), "codec {codec}");
        }
        // Fixed values, so the on-disk rule cannot drift unnoticed: CRC-32C
        // (Castagnoli) by its check value, then VIP's bits 6 and 22.
        assert_eq!(crc32c::crc32c(b"123456789"), 0xe306_9283);
        assert_eq!(crc32c::crc32c(b"VIP"), 0x2696_ef26);
        assert_eq!(tag_bits(b"VIP"), (1 << 6) | (1 << 22));
    }

    #[test]
    fn untagged_batches_summarise_to_zero_and_control_batches_to_every_bit() {
        let plain = make_batch(&[tagged("a", PLAIN, 1), tagged("b", &[], 2)], 2);
        assert_eq!(tag_summary(&plain), Some(0));
        let null_tag = encode_record_parts(0, 0, None, None, &[(b"weir.tag", None)]);
        let null_tag = wrap_records(&null_tag, 1, 0, 0, 0, 0);
        assert_eq!(tag_summary(&null_tag), Some(0), "a null tag is no tag");
        assert_eq!(tag_summary(&marker_batch()), Some(u32::MAX));
        assert_eq!(tag_summary(&empty_batch(0, 9, 5, 0).unwrap()), Some(0));
        assert_eq!(
            tag_summary(&skipped_range_batch(0, 9, 5).unwrap()),
            Some(u32::MAX),
            "a control batch, passed to every view"
        );
    }

    #[test]
    fn may_match_needs_both_bits_of_some_tag() {
        let vip = tag_bits(b"VIP");
        let gold = tag_bits(b"GOLD");
        let e = expr("VIP || GOLD");
        assert!(e.may_match(vip));
        assert!(e.may_match(gold | 1));
        assert!(e.may_match(u32::MAX), "an unknown summary");
        assert!(!e.may_match(0));
        let just_vip = expr("VIP");
        assert!(just_vip.may_match((1 << 6) | (1 << 22)));
        assert!(!just_vip.may_match(1 << 6), "one bit of two");
        assert!(!just_vip.may_match(1 << 22), "one bit of two");
        assert!(!just_vip.may_match(!vip), "every other bit");
        assert!(TagExpr::all().may_match(0));
        let summary = tag_summary(&mixed(0)).unwrap();
        assert!(expr("BRONZE").may_match(summary));
    }

    #[test]
    fn a_star_or_a_control_batch_passes_whole_without_reading_records() {
        assert_eq!(
            filter_batch(b"not a batch", &TagExpr::all()),
            Ok(Filtered::Whole)
        );
        assert_eq!(
            filter_batch(&marker_batch(), &expr("VIP")),
            Ok(Filtered::Whole)
        );
        assert_eq!(
            filter_batch(&skipped_range_batch(0, 3, 1).unwrap(), &expr("VIP")),
            Ok(Filtered::Whole),
            "an empty batch loses nothing"
        );
    }

    #[test]
    fn every_codec_filters_whole_skip_and_part() {
        for codec in CODECS {
            let b = mixed(codec);
            let tagged_only = make_batch(
                &[
                    tagged("a", VIP, 1),
                    tagged("b", DUPLICATES, 2),
                    tagged("c", GOLD, 3),
                ],
                codec,
            );
            let each = expr("VIP || GOLD || nothing");
            assert_eq!(
                filter_batch(&tagged_only, &each),
                Ok(Filtered::Whole),
                "codec {codec}"
            );
            let untagged_too = filter_batch(&b, &each).unwrap();
            let deltas: Vec<i64> = records(&part(untagged_too, &b))
                .iter()
                .map(|r| r.0)
                .collect();
            assert_eq!(
                deltas,
                [0, 2, 3, 4],
                "codec {codec}: all but the untagged one"
            );
            assert_eq!(
                filter_batch(&b, &expr("SILVER")),
                Ok(Filtered::Skip),
                "codec {codec}"
            );
            // The untagged record has an `x: VIP` header, which is not a tag.
            let vip = part(filter_batch(&b, &expr("VIP")).unwrap(), &b);
            let original = records(&b);
            assert_eq!(
                records(&vip),
                [original[0].clone(), original[3].clone()],
                "codec {codec}: offsets kept, bytes copied"
            );
            let h = H::parse(&vip).unwrap();
            assert_eq!((h.record_count, h.last_offset_delta), (2, 4));
            assert_eq!(h.max_timestamp, 3_000, "the newest kept record's");
            let gold = part(filter_batch(&b, &expr("GOLD")).unwrap(), &b);
            let deltas: Vec<i64> = records(&gold).iter().map(|r| r.0).collect();
            assert_eq!(deltas, [2, 4], "codec {codec}");
            assert_eq!(H::parse(&gold).unwrap().max_timestamp, 4_000);
        }
    }

    #[test]
    fn duplicate_header_keys_survive_a_rebuild_byte_for_byte() {
        let b = mixed(4);
        let bronze = part(filter_batch(&b, &expr("BRONZE")).unwrap(), &b);
        let want = encode_record(3, 2_000, &tagged("r3", DUPLICATES, 3_000));
        assert_eq!(records(&bronze), [(3, want)]);
        let decoded = RecordBatchDecoder::decode(&mut Bytes::from(bronze)).unwrap();
        assert_eq!(decoded.records[0].offset, 3);
    }

    #[test]
    fn a_record_with_two_tags_matches_either() {
        for e in ["BRONZE", "VIP", "BRONZE || VIP"] {
            let b = make_batch(&[tagged("d", DUPLICATES, 1), tagged("p", PLAIN, 2)], 0);
            let kept = part(filter_batch(&b, &expr(e)).unwrap(), &b);
            assert_eq!(records(&kept).len(), 1, "{e}");
        }
    }

    #[test]
    fn malformed_batches_are_errors_not_panics() {
        let b = mixed(0);
        let vip = expr("VIP");
        for cut in 0..b.len() {
            assert!(filter_batch(&b[..cut], &vip).is_err(), "{cut}");
            assert_eq!(tag_summary(&b[..cut]), None, "{cut}");
        }
        let mut huge_count = vec![0u8, 0, 0, 0x01, 0x01];
        varint(&mut huge_count, i64::from(i32::MAX));
        let bad_headers = [
            huge_count,
            vec![0, 0, 0, 0x01, 0x01, 0x80, 0x80, 0x80],
            vec![0, 0, 0, 0x01, 0x01, 0x02, 0x01, 0x01],
        ];
        for body in bad_headers {
            let raw = length_framed(&body);
            for codec in CODECS {
                let bad = wrap_records(&raw, 1, 0, 0, 0, codec);
                assert!(
                    matches!(
                        filter_batch(&bad, &vip),
                        Err(FilterError::Unreadable(BatchParseError::Framing(_)))
                    ),
                    "{body:?} codec {codec}"
                );
                assert_eq!(tag_summary(&bad), None);
            }
        }
        let bad_varint = wrap_records(&[0x80; 12], 1, 0, 0, 0, 0);
        assert!(filter_batch(&bad_varint, &vip).is_err());
        assert_eq!(tag_summary(&bad_varint), None);
        let not_gzip = wrap_records(b"plain bytes", 1, 0, 0, 0, 0);
        let mut not_gzip = not_gzip.to_vec();
        not_gzip[H::ATTRIBUTES_AT + 1] = 1;
        assert!(matches!(
            filter_batch(&not_gzip, &vip),
            Err(FilterError::Unreadable(BatchParseError::Decompress(_)))
        ));
    }

    #[test]
    fn a_batch_past_the_decompression_bound_is_an_error() {
        let big = vec![0u8; TAG_FILTER_DECOMPRESSED_BYTES_MAX];
        let b = make_batch(
            &[Rec {
                key: None,
                value: Some(&big),
                headers: VIP,
                ts: 0,
            }],
            4,
        );
        assert!(b.len() < 1 << 20, "the batch itself is small");
        assert!(matches!(
            filter_batch(&b, &expr("GOLD")),
            Err(FilterError::Unreadable(BatchParseError::Decompress(_)))
        ));
        assert_eq!(tag_summary(&b), None);
    }

    #[test]
    fn a_skipped_range_batch_is_a_valid_empty_batch() {
        let b = skipped_range_batch(100, 149, 7_000).unwrap();
        assert_eq!(b.len(), H::BYTES);
        let h = H::parse(&b).unwrap();
        assert_eq!(h.batch_bytes(), Some(H::BYTES));
        assert_eq!((h.base_offset, h.last_offset()), (100, 149));
        assert_eq!((h.magic, h.attributes, h.record_count), (2, H::CONTROL, 0));
        assert!(!h.is_transactional() && h.codec() == 0);
        assert_eq!((h.base_timestamp, h.max_timestamp), (7_000, 7_000));
        assert_eq!(
            (h.producer_id, h.producer_epoch, h.base_sequence),
            (-1, -1, -1)
        );
        assert_eq!(h.partition_leader_epoch, -1);
        assert_eq!(h.crc, crc32c::crc32c(&b[H::ATTRIBUTES_AT..]));
        assert!(parse_replica_payload(&b).is_ok(), "the log would take it");
        let decoded = RecordBatchDecoder::decode(&mut Bytes::from(b)).unwrap();
        assert!(decoded.records.is_empty());
        assert!(skipped_range_batch(5, 5, 0).is_some(), "one offset");
        assert_eq!(skipped_range_batch(5, 4, 0), None);
        let widest = i64::from(i32::MAX);
        assert!(skipped_range_batch(0, widest, 0).is_some());
        assert_eq!(skipped_range_batch(0, widest + 1, 0), None);
        assert_eq!(skipped_range_batch(i64::MIN, i64::MAX, 0), None);
    }
}
