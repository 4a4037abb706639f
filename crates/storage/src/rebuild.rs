//! Reading a stored batch's records and rebuilding the batch with only some
//! of them: the one piece of code that log compaction (which drops
//! superseded records) and tag filtering (which drops records a view does
//! not want) share.
//!
//! A batch is rebuilt by copying the raw bytes of the records it keeps:
//! their framing is parsed ([`crate::records`]), never their headers, so
//! duplicate header keys survive byte for byte. A compressed batch is
//! decompressed within a bound the caller names and recompressed with its
//! own codec. The base offset, `lastOffsetDelta`, base timestamp, producer
//! fields and each kept record's offset and timestamp deltas stay, so every
//! kept record keeps its offset and timestamp; the record count, batch
//! length, max timestamp and CRC32C are recomputed.

use std::borrow::Cow;

use bytes::BytesMut;
use kafka_protocol::compression::{Compressor, Gzip, Lz4, Snappy, Zstd};

use crate::batch::{BATCH_HEADER_BYTES, RecordBatchHeader as H};
use crate::records::{
    DecompressError, RecordFrame, RecordFramingError, decompress_records, record_frames,
};

/// The fewest bytes one record takes in a records section: a length
/// varint, attributes, timestamp delta, offset delta, key length and value
/// length (a header count may be missing from a malformed record; the walk
/// reads no further than the value). Bounds the frames a section can hold.
const FRAMED_RECORD_BYTES_MIN: usize = 6;
/// The most frames reserved before any is read: past it the list grows
/// with the records actually found, so a batch whose header overstates its
/// count cannot reserve memory its records do not back.
const FRAMES_RESERVED_MAX: usize = 4096;

/// Why a stored batch's records cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchParseError {
    /// Fewer bytes than a batch header.
    #[error("a batch of {bytes} bytes is shorter than its 61-byte header")]
    ShortHeader {
        /// The bytes there are.
        bytes: usize,
    },
    /// The header's batch length does not match the batch's bytes.
    #[error("batch length {batch_length} does not frame the batch's {bytes} bytes")]
    Length {
        /// The `batchLength` field.
        batch_length: i32,
        /// The bytes there are.
        bytes: usize,
    },
    /// The header announces a negative number of records.
    #[error("the batch announces {count} records")]
    NegativeCount {
        /// The record count field.
        count: i32,
    },
    /// The records do not decompress, or past the caller's bound.
    #[error(transparent)]
    Decompress(#[from] DecompressError),
    /// A record's framing (or one of its headers) cannot be followed.
    #[error(transparent)]
    Framing(#[from] RecordFramingError),
    /// The records section holds fewer records than the header announces,
    /// or bytes after the last one.
    #[error(
        "the records section holds {found} records in {read} of its {bytes} bytes; the header announces {count}"
    )]
    Count {
        /// The record count field.
        count: i32,
        /// Records found before the section ended.
        found: usize,
        /// Bytes those records take.
        read: usize,
        /// Bytes of the (decompressed) section.
        bytes: usize,
    },
}

/// A stored batch with its records decompressed and framed, ready to be
/// filtered and passed to [`rebuild`].
#[derive(Debug)]
pub(crate) struct ParsedBatch<'a> {
    /// The stored batch, header and all.
    pub batch: &'a [u8],
    /// Its header.
    pub header: H,
    /// The records section, decompressed (borrowed from `batch` when the
    /// codec is none).
    pub records: Cow<'a, [u8]>,
    /// Each record's framing; ranges index `records`.
    pub frames: Vec<RecordFrame>,
}

impl<'a> ParsedBatch<'a> {
    /// The records of `batch` (one whole stored batch), decompressed to at
    /// most `decompressed_bytes_max` bytes. Every byte of the section must
    /// belong to one of the records the header announces. Control batches
    /// parse like any other; whether to touch them is the caller's call.
    pub fn parse(batch: &'a [u8], decompressed_bytes_max: usize) -> Result<Self, BatchParseError> {
        let (header, records) = records_of(batch, decompressed_bytes_max)?;
        Self::from_records(batch, header, records)
    }

    /// [`Self::parse`], framing the records only up to the one at offset
    /// `last` (or to the end when it is not in the batch): for a reader
    /// that wants a few records of a large batch, whose framing was checked
    /// whole when it was appended. The records past `last` are not framed,
    /// and a batch with fewer records than its header announces, or bytes
    /// after its last, is not refused here.
    pub fn parse_through(
        batch: &'a [u8],
        decompressed_bytes_max: usize,
        last: i64,
    ) -> Result<Self, BatchParseError> {
        let (header, records) = records_of(batch, decompressed_bytes_max)?;
        let last_delta = last.saturating_sub(header.base_offset);
        let mut frames = Vec::new();
        for frame in record_frames(&records, header.record_count) {
            let frame = frame?;
            let reached = frame.offset_delta >= last_delta;
            frames.push(frame);
            if reached {
                break;
            }
        }
        Ok(Self {
            batch,
            header,
            records,
            frames,
        })
    }

    /// [`Self::parse`] of a batch whose records section [`records_of`]
    /// already gave.
    pub fn from_records(
        batch: &'a [u8],
        header: H,
        records: Cow<'a, [u8]>,
    ) -> Result<Self, BatchParseError> {
        let capacity = usize::try_from(header.record_count)
            .unwrap_or(0)
            .min(records.len() / FRAMED_RECORD_BYTES_MIN)
            .min(FRAMES_RESERVED_MAX);
        let mut frames = Vec::with_capacity(capacity);
        for_each_frame(&records, header.record_count, |frame| {
            frames.push(frame);
            Ok(())
        })?;
        Ok(Self {
            batch,
            header,
            records,
            frames,
        })
    }

    /// The raw bytes of record `i`, length varint included.
    pub fn record(&self, i: usize) -> Option<&[u8]> {
        self.records.get(self.frames.get(i)?.bytes.clone())
    }

    /// The timestamp of `frame`, one of this batch's records: the batch's
    /// max timestamp under `LogAppendTime`, else base timestamp plus delta.
    pub fn timestamp(&self, frame: &RecordFrame) -> i64 {
        if self.header.is_log_append_time() {
            return self.header.max_timestamp;
        }
        self.header
            .base_timestamp
            .saturating_add(frame.timestamp_delta)
    }
}

/// The header of `batch` and its records section decompressed to at most
/// `decompressed_bytes_max` bytes.
pub(crate) fn records_of(
    batch: &[u8],
    decompressed_bytes_max: usize,
) -> Result<(H, Cow<'_, [u8]>), BatchParseError> {
    let bytes = batch.len();
    let header = H::parse(batch).ok_or(BatchParseError::ShortHeader { bytes })?;
    if header.batch_bytes() != Some(bytes) {
        return Err(BatchParseError::Length {
            batch_length: header.batch_length,
            bytes,
        });
    }
    if header.record_count < 0 {
        return Err(BatchParseError::NegativeCount {
            count: header.record_count,
        });
    }
    let section = batch.get(BATCH_HEADER_BYTES..).unwrap_or_default();
    let records = decompress_records(header.codec(), section, decompressed_bytes_max)?;
    Ok((header, records))
}

/// Call `each` with the framing of each of the `count` records of
/// `records`, in order, stopping at the first error (its own or the
/// walk's). Every byte of `records` must belong to one of them.
pub(crate) fn for_each_frame(
    records: &[u8],
    count: i32,
    mut each: impl FnMut(RecordFrame) -> Result<(), BatchParseError>,
) -> Result<(), BatchParseError> {
    let mut frames = record_frames(records, count);
    let mut found = 0usize;
    for frame in frames.by_ref() {
        each(frame?)?;
        found += 1;
    }
    let read = frames.position();
    if usize::try_from(count) != Ok(found) || read != records.len() {
        return Err(BatchParseError::Count {
            count,
            found,
            read,
            bytes: records.len(),
        });
    }
    Ok(())
}

/// `raw` records compressed with Kafka codec `codec` (1 gzip, 2 snappy,
/// 3 lz4, 4 zstd); `None` for any other codec or a failed compression.
pub(crate) fn compress(codec: i16, raw: &[u8]) -> Option<Vec<u8>> {
    let mut out = BytesMut::new();
    let fill = |tmp: &mut BytesMut| {
        tmp.extend_from_slice(raw);
        Ok(())
    };
    let done = match codec {
        1 => Gzip::compress(&mut out, fill),
        2 => Snappy::compress(&mut out, fill),
        3 => Lz4::compress(&mut out, fill),
        4 => Zstd::compress(&mut out, fill),
        _ => return None,
    };
    done.ok().map(|()| out.to_vec())
}

/// `parsed`'s batch rebuilt with only the records `kept` (indexes into
/// `parsed.frames`, in order): every header field stays except the record
/// count, batch length, max timestamp (under `CreateTime`, the largest of
/// the kept records'; unchanged when none is kept), attributes (codec none
/// when nothing is kept, as the section is then empty) and CRC. `None` when
/// an index is out of range, the records do not recompress, or the batch
/// would pass `i32::MAX` bytes.
pub(crate) fn rebuild(parsed: &ParsedBatch<'_>, kept: &[usize]) -> Option<Vec<u8>> {
    let header = &parsed.header;
    let (attributes, codec) = (header.attributes, header.codec());
    let mut raw = Vec::new();
    let mut max_ts = i64::MIN;
    for &k in kept {
        raw.extend_from_slice(parsed.record(k)?);
        max_ts = max_ts.max(parsed.timestamp(parsed.frames.get(k)?));
    }
    let (attributes, section) = if kept.is_empty() {
        (attributes & !H::COMPRESSION_MASK, Vec::new())
    } else if codec == 0 {
        (attributes, raw)
    } else {
        (attributes, compress(codec, &raw)?)
    };
    let mut out = Vec::with_capacity(BATCH_HEADER_BYTES + section.len());
    out.extend_from_slice(parsed.batch.get(..BATCH_HEADER_BYTES)?);
    out.extend_from_slice(&section);
    let batch_length = i32::try_from(out.len() - H::LOG_OVERHEAD_BYTES).ok()?;
    let put = |out: &mut Vec<u8>, at: usize, v: &[u8]| {
        out.get_mut(at..at + v.len()).map(|b| b.copy_from_slice(v))
    };
    put(&mut out, H::BATCH_LENGTH_AT, &batch_length.to_be_bytes())?;
    put(&mut out, H::ATTRIBUTES_AT, &attributes.to_be_bytes())?;
    if attributes & H::LOG_APPEND_TIME == 0 && !kept.is_empty() {
        put(&mut out, H::MAX_TIMESTAMP_AT, &max_ts.to_be_bytes())?;
    }
    let count = i32::try_from(kept.len()).ok()?;
    put(&mut out, H::RECORD_COUNT_AT, &count.to_be_bytes())?;
    let crc = crc32c::crc32c(out.get(H::ATTRIBUTES_AT..)?);
    put(&mut out, H::CRC_AT, &crc.to_be_bytes())?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::test_records::{Rec, encode_record, make_batch, rec, wrap_records};

    const BOUND: usize = 1 << 20;

    fn three(codec: i16) -> bytes::Bytes {
        make_batch(
            &[
                rec("a", Some("one"), 100),
                rec("b", None, 300),
                rec("c", Some("three"), 200),
            ],
            codec,
        )
    }

    #[test]
    fn parse_through_frames_records_up_to_the_one_asked_for() {
        for codec in [0, 3] {
            let b = three(codec);
            let whole = ParsedBatch::parse(&b, BOUND).unwrap();
            let base = whole.header.base_offset;
            for (last, framed) in [(base - 1, 1), (base, 1), (base + 1, 2), (base + 2, 3)] {
                let parsed = ParsedBatch::parse_through(&b, BOUND, last).unwrap();
                assert_eq!(
                    parsed.frames[..],
                    whole.frames[..framed],
                    "codec {codec}, {last}"
                );
            }
            let past = ParsedBatch::parse_through(&b, BOUND, base + 50).unwrap();
            assert_eq!(past.frames, whole.frames, "to the end when it is not there");
        }
    }

    #[test]
    fn a_batch_parses_to_each_records_raw_bytes_in_every_codec() {
        for codec in 0..=4 {
            let b = three(codec);
            let parsed = ParsedBatch::parse(&b, BOUND).unwrap();
            assert_eq!(parsed.frames.len(), 3, "codec {codec}");
            assert_eq!(
                parsed.record(1),
                Some(&encode_record(1, 200, &rec("b", None, 300))[..])
            );
            assert!(parsed.frames[1].value.is_none());
            let ts: Vec<i64> = parsed.frames.iter().map(|f| parsed.timestamp(f)).collect();
            assert_eq!(ts, [100, 300, 200]);
            assert_eq!(
                matches!(parsed.records, Cow::Borrowed(_)),
                codec == 0,
                "an uncompressed section is not copied"
            );
        }
    }

    #[test]
    fn a_rebuilt_batch_keeps_offsets_and_recomputes_count_length_max_timestamp_and_crc() {
        for codec in 0..=4 {
            let b = three(codec);
            let parsed = ParsedBatch::parse(&b, BOUND).unwrap();
            let out = rebuild(&parsed, &[0, 2]).unwrap();
            let h = H::parse(&out).unwrap();
            assert_eq!(h.batch_bytes(), Some(out.len()));
            assert_eq!(h.crc, crc32c::crc32c(&out[H::ATTRIBUTES_AT..]));
            assert_eq!((h.record_count, h.last_offset_delta), (2, 2));
            assert_eq!((h.base_timestamp, h.max_timestamp), (100, 200));
            assert_eq!(h.codec(), codec);
            let again = ParsedBatch::parse(&out, BOUND).unwrap();
            let deltas: Vec<i64> = again.frames.iter().map(|f| f.offset_delta).collect();
            assert_eq!(deltas, [0, 2]);
            assert_eq!(again.record(1), parsed.record(2));
        }
    }

    #[test]
    fn an_empty_rebuild_is_uncompressed_and_keeps_the_max_timestamp() {
        let b = three(3);
        let parsed = ParsedBatch::parse(&b, BOUND).unwrap();
        let out = rebuild(&parsed, &[]).unwrap();
        assert_eq!(out.len(), BATCH_HEADER_BYTES);
        let h = H::parse(&out).unwrap();
        assert_eq!((h.codec(), h.record_count, h.max_timestamp), (0, 0, 300));
        assert_eq!(h.crc, crc32c::crc32c(&out[H::ATTRIBUTES_AT..]));
        assert_eq!(rebuild(&parsed, &[3]), None, "an index past the records");
    }

    #[test]
    fn log_append_time_keeps_the_stamped_max_timestamp() {
        let mut b = three(0).to_vec();
        crate::batch::stamp_log_append_time(&mut b, 9_000);
        let parsed = ParsedBatch::parse(&b, BOUND).unwrap();
        assert_eq!(parsed.timestamp(&parsed.frames[0]), 9_000);
        let out = rebuild(&parsed, &[0]).unwrap();
        let h = H::parse(&out).unwrap();
        assert!(h.is_log_append_time());
        assert_eq!(h.max_timestamp, 9_000);
    }

    #[test]
    fn a_batch_whose_records_do_not_match_its_header_is_refused() {
        let one = encode_record(0, 0, &rec("a", Some("v"), 0));
        let short = wrap_records(&one, 2, 1, 0, 0, 0);
        assert!(matches!(
            ParsedBatch::parse(&short, BOUND),
            Err(BatchParseError::Framing(_))
        ));
        let mut extra = one.clone();
        extra.push(0);
        let extra = wrap_records(&extra, 1, 0, 0, 0, 0);
        assert!(matches!(
            ParsedBatch::parse(&extra, BOUND),
            Err(BatchParseError::Count { found: 1, .. })
        ));
        let negative = wrap_records(&one, -1, 0, 0, 0, 0);
        assert_eq!(
            ParsedBatch::parse(&negative, BOUND).unwrap_err(),
            BatchParseError::NegativeCount { count: -1 }
        );
        let b = three(0);
        assert!(matches!(
            ParsedBatch::parse(&b[..b.len() - 1], BOUND),
            Err(BatchParseError::Length { .. })
        ));
        assert_eq!(
            ParsedBatch::parse(&b[..60], BOUND).unwrap_err(),
            BatchParseError::ShortHeader { bytes: 60 }
        );
    }

    #[test]
    fn records_past_the_bound_are_refused() {
        let b = make_batch(
            &[Rec {
                key: None,
                value: Some(&[7; 4096]),
                headers: &[],
                ts: 0,
            }],
            4,
        );
        assert_eq!(
            ParsedBatch::parse(&b, 4096).unwrap_err(),
            BatchParseError::Decompress(DecompressError::TooLarge { bytes_max: 4096 })
        );
        assert!(ParsedBatch::parse(&b, 8192).is_ok());
    }
}
