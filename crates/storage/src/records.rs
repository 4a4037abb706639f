//! The records section of a Kafka RecordBatch v2: decompressing it within a
//! bound, and walking each record's framing (length, attributes, timestamp
//! and offset deltas, key, value) in place. Records are read here, never
//! re-encoded: a user's batch is stored byte for byte, duplicate header keys
//! and all.
//!
//! `kafka-protocol`'s decompressors are not used on this path, because they
//! inflate without a limit: gzip, lz4 and zstd read to the end, and snappy
//! allocates whatever length each block claims (up to 4 GiB) before
//! checking it. A produce payload is client input, so every codec here
//! reads through a bound. The `snap` crate's `FrameDecoder` reads the
//! official snappy framing, not the xerial framing that Kafka's Java clients
//! write, so xerial blocks are split here and each is decompressed with
//! `snap::raw` once its stated size fits.

use std::borrow::Cow;
use std::io::Read;
use std::ops::Range;

/// xerial snappy-java's stream magic, which Kafka's Java clients write.
const XERIAL_MAGIC: &[u8] = b"\x82SNAPPY\x00";
/// The xerial header: magic, version and compatible version (4 bytes each).
const XERIAL_HEADER_BYTES: usize = 16;
/// Each xerial block is prefixed by its compressed length (big-endian).
const XERIAL_BLOCK_LENGTH_BYTES: usize = 4;

/// Why a records section could not be decompressed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecompressError {
    /// The records decompress to more than the caller allows.
    #[error("the records of a batch decompress to more than {bytes_max} bytes")]
    TooLarge {
        /// The bound that was passed.
        bytes_max: usize,
    },
    /// The records do not decompress with the batch's codec, or the codec is unknown.
    #[error("the records of a batch do not decompress with codec {codec}")]
    Corrupt {
        /// Kafka's codec id (attributes & 7).
        codec: i16,
    },
}

/// The records section of a batch, decompressed with Kafka codec `codec`
/// (0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd) to at most `bytes_max` bytes.
/// An uncompressed section is returned as it is.
pub fn decompress_records(
    codec: i16,
    section: &[u8],
    bytes_max: usize,
) -> Result<Cow<'_, [u8]>, DecompressError> {
    let corrupt = |_| DecompressError::Corrupt { codec };
    let out = match codec {
        0 => return Ok(Cow::Borrowed(section)),
        1 => read_bounded(flate2::read::GzDecoder::new(section), codec, bytes_max),
        2 => snappy(section, bytes_max),
        3 => read_bounded(
            lz4::Decoder::new(section).map_err(corrupt)?,
            codec,
            bytes_max,
        ),
        4 => read_bounded(
            zstd::stream::read::Decoder::new(section).map_err(corrupt)?,
            codec,
            bytes_max,
        ),
        _ => Err(DecompressError::Corrupt { codec }),
    }?;
    Ok(Cow::Owned(out))
}

fn read_bounded(
    reader: impl Read,
    codec: i16,
    bytes_max: usize,
) -> Result<Vec<u8>, DecompressError> {
    let mut out = Vec::new();
    let limit = u64::try_from(bytes_max)
        .unwrap_or(u64::MAX)
        .saturating_add(1);
    reader
        .take(limit)
        .read_to_end(&mut out)
        .map_err(|_| DecompressError::Corrupt { codec })?;
    if out.len() > bytes_max {
        return Err(DecompressError::TooLarge { bytes_max });
    }
    Ok(out)
}

/// Kafka's snappy: xerial framing (blocks each prefixed by its 4-byte
/// length) when the magic is present, else one raw snappy block. Each block
/// states its decompressed size, which is checked before it is allocated.
fn snappy(section: &[u8], bytes_max: usize) -> Result<Vec<u8>, DecompressError> {
    let corrupt = || DecompressError::Corrupt { codec: 2 };
    let mut out = Vec::new();
    let block = |compressed: &[u8], out: &mut Vec<u8>| {
        let len = snap::raw::decompress_len(compressed).map_err(|_| corrupt())?;
        let start = out.len();
        let end = start.checked_add(len).filter(|end| *end <= bytes_max);
        let end = end.ok_or(DecompressError::TooLarge { bytes_max })?;
        out.resize(end, 0);
        snap::raw::Decoder::new()
            .decompress(compressed, out.get_mut(start..).unwrap_or_default())
            .map_err(|_| corrupt())?;
        Ok(())
    };
    if !section.starts_with(XERIAL_MAGIC) {
        block(section, &mut out)?;
        return Ok(out);
    }
    let mut rest = section.get(XERIAL_HEADER_BYTES..).ok_or_else(corrupt)?;
    while !rest.is_empty() {
        let (length, blocks) = rest
            .split_first_chunk::<XERIAL_BLOCK_LENGTH_BYTES>()
            .ok_or_else(corrupt)?;
        let length = usize::try_from(u32::from_be_bytes(*length)).map_err(|_| corrupt())?;
        let compressed = blocks.get(..length).ok_or_else(corrupt)?;
        block(compressed, &mut out)?;
        rest = blocks.get(length..).unwrap_or_default();
    }
    Ok(out)
}

/// One record's framing inside a (decompressed) records section. Ranges
/// index that section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordFrame {
    /// The whole record, its length varint included.
    pub bytes: Range<usize>,
    /// Added to the batch's base timestamp.
    pub timestamp_delta: i64,
    /// Added to the batch's base offset.
    pub offset_delta: i64,
    /// The key; `None` for a null key.
    pub key: Option<Range<usize>>,
    /// The value; `None` for a null value (a tombstone).
    pub value: Option<Range<usize>>,
    /// Where the record's headers start (their count varint), right after
    /// the value; [`record_headers`] walks them.
    pub headers_at: usize,
}

/// A record whose framing cannot be followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed record framing at byte {at} of the records")]
pub struct RecordFramingError {
    /// Where the record, or the header of it that cannot be followed,
    /// starts in the section.
    pub at: usize,
}

/// The first `count` records of a records section, in order. A record
/// whose framing cannot be followed ends the walk with an error. Headers
/// are not read (they are what follows the value in each record's bytes).
pub fn record_frames(section: &[u8], count: i32) -> RecordFrames<'_> {
    RecordFrames {
        section,
        at: 0,
        left: count.max(0),
    }
}

/// Iterator of [`record_frames`].
#[derive(Debug, Clone)]
pub struct RecordFrames<'a> {
    section: &'a [u8],
    at: usize,
    left: i32,
}

impl RecordFrames<'_> {
    /// Where the next record would start: once every record has been
    /// walked, the bytes the records took.
    pub fn position(&self) -> usize {
        self.at
    }
}

impl Iterator for RecordFrames<'_> {
    type Item = Result<RecordFrame, RecordFramingError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left <= 0 {
            return None;
        }
        match frame_at(self.section, self.at) {
            Some(frame) => {
                self.left -= 1;
                self.at = frame.bytes.end;
                Some(Ok(frame))
            }
            None => {
                self.left = 0;
                Some(Err(RecordFramingError { at: self.at }))
            }
        }
    }
}

/// The record starting at `at`: length varint, then attributes (1 byte),
/// timestampDelta (varlong), offsetDelta (varint), key and value (each a
/// varint length, -1 for null, then the bytes), then headers.
fn frame_at(section: &[u8], at: usize) -> Option<RecordFrame> {
    let (len, n) = read_varint(section.get(at..)?)?;
    let body_start = at.checked_add(n)?;
    let end = body_start.checked_add(usize::try_from(len).ok()?)?;
    let body = section.get(body_start..end)?;
    let mut p = 1usize;
    let (timestamp_delta, n) = read_varint(body.get(p..)?)?;
    p += n;
    let (offset_delta, n) = read_varint(body.get(p..)?)?;
    p += n;
    let shift = |r: Range<usize>| body_start + r.start..body_start + r.end;
    let key = length_prefixed(body, &mut p)?.map(shift);
    let value = length_prefixed(body, &mut p)?.map(shift);
    Some(RecordFrame {
        bytes: at..end,
        timestamp_delta,
        offset_delta,
        key,
        value,
        headers_at: body_start + p,
    })
}

/// The fewest bytes one record header takes: a key length varint (an empty
/// key) and a value length varint (a null or empty value).
const HEADER_BYTES_MIN: usize = 2;

/// One record header, in place: the ranges index the records section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordHeader {
    /// The header key (never null: Kafka refuses a record with a null key).
    pub key: Range<usize>,
    /// The header value; `None` for a null value.
    pub value: Option<Range<usize>>,
}

/// The headers of the record `frame` (one of `section`'s
/// [`record_frames`]), in order, read in place: a varint count, then per
/// header a varint key length and the key, a varint value length (-1 for
/// null) and the value. Nothing is decoded into a map, so duplicate keys
/// come back as often as they are stored. A count that is negative or
/// larger than the record's bytes can hold, a null key, a header running
/// past the record or bytes left after the last header end the walk with an
/// error. Nothing is allocated.
pub fn record_headers<'a>(section: &'a [u8], frame: &RecordFrame) -> RecordHeaders<'a> {
    RecordHeaders {
        section,
        at: frame.headers_at,
        end: frame.bytes.end,
        left: None,
        done: false,
    }
}

/// Iterator of [`record_headers`].
#[derive(Debug, Clone)]
pub struct RecordHeaders<'a> {
    section: &'a [u8],
    /// Where the next header (or, before the first call, the count) starts.
    at: usize,
    /// Where the record ends.
    end: usize,
    /// Headers still to read; `None` until the count is read.
    left: Option<usize>,
    done: bool,
}

impl RecordHeaders<'_> {
    /// The record's bytes up to its end, which no header may pass.
    fn record(&self) -> Option<&[u8]> {
        self.section.get(..self.end)
    }

    /// Read the header count at `at` and move past it.
    fn read_count(&mut self) -> Option<usize> {
        let (count, n) = read_varint(self.record()?.get(self.at..)?)?;
        let count = usize::try_from(count).ok()?;
        let room = self.end.checked_sub(self.at)?.checked_sub(n)?;
        if count > room / HEADER_BYTES_MIN {
            return None;
        }
        self.at += n;
        Some(count)
    }

    /// Read the header at `at` and move past it.
    fn read_header(&mut self) -> Option<RecordHeader> {
        let record = self.record()?;
        let mut p = self.at;
        let key = length_prefixed(record, &mut p)??;
        let value = length_prefixed(record, &mut p)?;
        self.at = p;
        Some(RecordHeader { key, value })
    }

    fn fail(&mut self) -> Option<Result<RecordHeader, RecordFramingError>> {
        self.done = true;
        Some(Err(RecordFramingError { at: self.at }))
    }
}

impl Iterator for RecordHeaders<'_> {
    type Item = Result<RecordHeader, RecordFramingError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let left = match self.left {
            Some(left) => left,
            None => match self.read_count() {
                Some(count) => count,
                None => return self.fail(),
            },
        };
        if left == 0 {
            self.left = Some(0);
            if self.at != self.end {
                return self.fail();
            }
            self.done = true;
            return None;
        }
        match self.read_header() {
            Some(header) => {
                self.left = Some(left - 1);
                Some(Ok(header))
            }
            None => self.fail(),
        }
    }
}

/// A varint length then that many bytes of `body` at `*p` (moved past
/// them): `Some(None)` for a null field, `None` when the bytes are missing.
fn length_prefixed(body: &[u8], p: &mut usize) -> Option<Option<Range<usize>>> {
    let (len, n) = read_varint(body.get(*p..)?)?;
    *p += n;
    if len < 0 {
        return Some(None);
    }
    let end = p.checked_add(usize::try_from(len).ok()?)?;
    body.get(*p..end)?;
    let range = *p..end;
    *p = end;
    Some(Some(range))
}

/// A zigzag varint (up to 64 bits) and the bytes it took.
pub(crate) fn read_varint(b: &[u8]) -> Option<(i64, usize)> {
    let mut value: u64 = 0;
    for i in 0..10 {
        let byte = *b.get(i)?;
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            let signed = ((value >> 1) as i64) ^ -((value & 1) as i64);
            return Some((signed, i + 1));
        }
    }
    None
}

#[cfg(test)]
pub(crate) mod test_records {
    //! Hand-written RecordBatch v2 bytes for tests. Unlike
    //! `batch::test_batches` (kafka-protocol's encoder, which keeps headers
    //! in a map), these records may carry duplicate header keys, null header
    //! values and framing no encoder would write.

    use bytes::Bytes;

    /// One record to encode: key, value, headers (duplicates allowed), timestamp.
    pub struct Rec<'a> {
        pub key: Option<&'a [u8]>,
        pub value: Option<&'a [u8]>,
        pub headers: &'a [(&'a [u8], &'a [u8])],
        pub ts: i64,
    }

    /// A record with key `key`, value `value` (`None`: a tombstone) and no headers.
    pub fn rec<'a>(key: &'a str, value: Option<&'a str>, ts: i64) -> Rec<'a> {
        Rec {
            key: Some(key.as_bytes()),
            value: value.map(str::as_bytes),
            headers: &[],
            ts,
        }
    }

    /// Append `v` as a zigzag varint.
    pub fn varint(out: &mut Vec<u8>, v: i64) {
        let mut z = ((v << 1) ^ (v >> 63)) as u64;
        while z >= 0x80 {
            out.push((z as u8) | 0x80);
            z >>= 7;
        }
        out.push(z as u8);
    }

    /// Append a varint length (-1 for `None`) and the bytes.
    pub fn bytes_field(out: &mut Vec<u8>, b: Option<&[u8]>) {
        match b {
            None => varint(out, -1),
            Some(b) => {
                varint(out, b.len() as i64);
                out.extend_from_slice(b);
            }
        }
    }

    /// A record's bytes exactly as Kafka frames it (length varint first).
    pub fn encode_record(offset_delta: i64, ts_delta: i64, r: &Rec) -> Vec<u8> {
        let headers: Vec<(&[u8], Option<&[u8]>)> =
            r.headers.iter().map(|(k, v)| (*k, Some(*v))).collect();
        encode_record_parts(offset_delta, ts_delta, r.key, r.value, &headers)
    }

    /// [`encode_record`] with header values that may be null.
    pub fn encode_record_parts(
        offset_delta: i64,
        ts_delta: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(&[u8], Option<&[u8]>)],
    ) -> Vec<u8> {
        let mut body = vec![0u8];
        varint(&mut body, ts_delta);
        varint(&mut body, offset_delta);
        bytes_field(&mut body, key);
        bytes_field(&mut body, value);
        varint(&mut body, headers.len() as i64);
        for (k, v) in headers {
            bytes_field(&mut body, Some(k));
            bytes_field(&mut body, *v);
        }
        length_framed(&body)
    }

    /// `body` behind its length varint: one record's bytes.
    pub fn length_framed(body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        varint(&mut out, body.len() as i64);
        out.extend_from_slice(body);
        out
    }

    /// A RecordBatch v2 of `recs` (offset deltas 0, 1, ...) compressed with
    /// `codec`, written by hand so records may carry duplicate header keys.
    pub fn make_batch(recs: &[Rec], codec: i16) -> Bytes {
        let first_ts = recs.first().map_or(0, |r| r.ts);
        let max_ts = recs.iter().map(|r| r.ts).max().unwrap_or(0);
        let mut raw = Vec::new();
        for (i, r) in recs.iter().enumerate() {
            raw.extend_from_slice(&encode_record(i as i64, r.ts - first_ts, r));
        }
        let count = recs.len() as i32;
        wrap_records(&raw, count, count - 1, first_ts, max_ts, codec)
    }

    /// A RecordBatch v2 at base offset 0 (no producer, leader epoch 0)
    /// around `raw` records, whatever they hold, compressed with `codec`;
    /// the header says what it is told and the CRC is valid.
    pub fn wrap_records(
        raw: &[u8],
        count: i32,
        last_offset_delta: i32,
        first_ts: i64,
        max_ts: i64,
        codec: i16,
    ) -> Bytes {
        let section = if codec == 0 {
            raw.to_vec()
        } else {
            crate::rebuild::compress(codec, raw).unwrap()
        };
        let mut b = Vec::new();
        b.extend_from_slice(&0i64.to_be_bytes());
        b.extend_from_slice(&((49 + section.len()) as i32).to_be_bytes());
        b.extend_from_slice(&0i32.to_be_bytes());
        b.push(2);
        b.extend_from_slice(&[0; 4]);
        b.extend_from_slice(&codec.to_be_bytes());
        b.extend_from_slice(&last_offset_delta.to_be_bytes());
        b.extend_from_slice(&first_ts.to_be_bytes());
        b.extend_from_slice(&max_ts.to_be_bytes());
        b.extend_from_slice(&(-1i64).to_be_bytes());
        b.extend_from_slice(&(-1i16).to_be_bytes());
        b.extend_from_slice(&(-1i32).to_be_bytes());
        b.extend_from_slice(&count.to_be_bytes());
        b.extend_from_slice(&section);
        let crc = crc32c::crc32c(&b[21..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        Bytes::from(b)
    }
}

#[cfg(test)]
mod tests {
    use kafka_protocol::records::Compression;

    use super::*;
    use crate::batch::test_batches::batch_with;
    use crate::batch::{BATCH_HEADER_BYTES, RecordBatchHeader};

    const BOUND: usize = 1 << 20;

    #[test]
    fn every_codec_decompresses_to_the_same_records() {
        let plain = batch_with(5, 20, &[], Compression::None, None);
        let want = &plain[BATCH_HEADER_BYTES..];
        for c in [
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let b = batch_with(5, 20, &[], c, None);
            let h = RecordBatchHeader::parse(&b).unwrap();
            let got = decompress_records(h.codec(), &b[BATCH_HEADER_BYTES..], BOUND).unwrap();
            assert_eq!(&*got, want, "{c:?}");
        }
    }

    #[test]
    fn a_gzip_bomb_is_refused_at_the_bound() {
        let huge = vec![b'x'; BOUND + 1];
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &huge).unwrap();
        let section = gz.finish().unwrap();
        assert!(section.len() < BOUND / 16, "the bomb is small");
        assert_eq!(
            decompress_records(1, &section, BOUND),
            Err(DecompressError::TooLarge { bytes_max: BOUND })
        );
        assert_eq!(
            decompress_records(1, &section, BOUND + 1).unwrap().len(),
            BOUND + 1
        );
    }

    #[test]
    fn a_snappy_block_claiming_more_than_the_bound_is_refused_before_allocating() {
        let raw = snap::raw::Encoder::new()
            .compress_vec(&vec![0u8; 4096])
            .unwrap();
        assert_eq!(
            decompress_records(2, &raw, 4095),
            Err(DecompressError::TooLarge { bytes_max: 4095 })
        );
        let mut xerial = b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01".to_vec();
        for _ in 0..2 {
            xerial.extend_from_slice(&(raw.len() as u32).to_be_bytes());
            xerial.extend_from_slice(&raw);
        }
        assert_eq!(decompress_records(2, &xerial, 8192).unwrap().len(), 8192);
        assert_eq!(
            decompress_records(2, &xerial, 8191),
            Err(DecompressError::TooLarge { bytes_max: 8191 })
        );
        xerial.truncate(xerial.len() - 1);
        assert_eq!(
            decompress_records(2, &xerial, 8192),
            Err(DecompressError::Corrupt { codec: 2 })
        );
    }

    #[test]
    fn codecs_past_zstd_are_corrupt() {
        for codec in 5..=7 {
            assert_eq!(
                decompress_records(codec, b"abc", BOUND),
                Err(DecompressError::Corrupt { codec })
            );
        }
    }

    #[test]
    fn frames_give_deltas_keys_and_values() {
        let b = batch_with(3, 4, &[100, 130, 90], Compression::None, None);
        let section = &b[BATCH_HEADER_BYTES..];
        let mut frames = record_frames(section, 3);
        let all: Vec<RecordFrame> = frames.by_ref().map(Result::unwrap).collect();
        assert_eq!(frames.position(), section.len());
        assert_eq!(
            all.iter().map(|f| f.offset_delta).collect::<Vec<_>>(),
            [0, 1, 2]
        );
        let base_timestamp = RecordBatchHeader::parse(&b).unwrap().base_timestamp;
        assert_eq!(
            all.iter()
                .map(|f| base_timestamp + f.timestamp_delta)
                .collect::<Vec<_>>(),
            [100, 130, 90]
        );
        let key = all[1].key.clone().unwrap();
        assert_eq!(&section[key], b"k1");
        let value = all[2].value.clone().unwrap();
        assert_eq!(&section[value], b"vvvv");
    }

    #[test]
    fn a_cut_section_ends_the_walk_with_an_error_and_never_panics() {
        let b = batch_with(3, 4, &[], Compression::None, None);
        let section = &b[BATCH_HEADER_BYTES..];
        for cut in 0..section.len() {
            let frames: Vec<_> = record_frames(&section[..cut], 3).collect();
            assert!(frames.last().is_some_and(Result::is_err), "{cut}");
            assert!(frames.len() <= 3);
        }
        assert_eq!(record_frames(section, -1).count(), 0);
    }

    use super::test_records::{encode_record_parts, length_framed, varint};

    /// A header's key and value bytes.
    type Header = (Vec<u8>, Option<Vec<u8>>);

    /// The headers of the one record of `raw`.
    fn headers_of(raw: &[u8]) -> Vec<Result<Header, RecordFramingError>> {
        let frame = record_frames(raw, 1).next().unwrap().unwrap();
        record_headers(raw, &frame)
            .map(|h| {
                h.map(|h| {
                    let value = h.value.map(|v| raw[v].to_vec());
                    (raw[h.key].to_vec(), value)
                })
            })
            .collect()
    }

    /// A record's body up to its header count: attributes, deltas, key, value.
    fn body_before_headers() -> Vec<u8> {
        let mut body = vec![0u8, 0, 0];
        varint(&mut body, 1);
        body.push(b'k');
        varint(&mut body, -1);
        body
    }

    #[test]
    fn headers_come_back_in_order_duplicates_and_null_values_included() {
        let headers: &[(&[u8], Option<&[u8]>)] = &[
            (b"x", Some(b"1")),
            (b"weir.tag", Some(b"VIP")),
            (b"x", Some(b"1")),
            (b"weir.tag", None),
            (b"", Some(b"")),
        ];
        let raw = encode_record_parts(0, 0, Some(b"k"), Some(b"v"), headers);
        let want: Vec<_> = headers
            .iter()
            .map(|(k, v)| Ok((k.to_vec(), v.map(<[u8]>::to_vec))))
            .collect();
        assert_eq!(headers_of(&raw), want);
        let none = encode_record_parts(0, 0, None, None, &[]);
        assert_eq!(headers_of(&none), []);
    }

    #[test]
    fn headers_are_found_after_a_null_value_of_any_varint_width() {
        // -1 written in two bytes (0x81 0x00) instead of one.
        let mut body = vec![0u8, 0, 0, 0x01, 0x81, 0x00];
        varint(&mut body, 1);
        body.extend_from_slice(&[0x02, b'h', 0x02, b'v']);
        let raw = length_framed(&body);
        assert_eq!(headers_of(&raw), [Ok((b"h".to_vec(), Some(b"v".to_vec())))]);
    }

    #[test]
    fn a_negative_or_oversized_header_count_is_an_error_without_allocating() {
        for count in [-1, -2, i64::from(i32::MAX), i64::MAX, 2] {
            let mut body = body_before_headers();
            varint(&mut body, count);
            body.extend_from_slice(&[0x02, b'h', 0x01]);
            let raw = length_framed(&body);
            let at = record_frames(&raw, 1).next().unwrap().unwrap().headers_at;
            assert_eq!(
                headers_of(&raw),
                [Err(RecordFramingError { at })],
                "{count}"
            );
        }
    }

    #[test]
    fn malformed_headers_end_the_walk_with_an_error() {
        let cases: [(&str, &[u8]); 6] = [
            ("no count", &[]),
            ("unterminated count", &[0x80; 11]),
            ("null key", &[0x02, 0x01, 0x01]),
            ("key past the record", &[0x02, 0x08, b'h', 0x01]),
            ("value past the record", &[0x02, 0x02, b'h', 0x08, b'v']),
            (
                "bytes after the last header",
                &[0x02, 0x02, b'h', 0x01, 0x00],
            ),
        ];
        for (what, headers) in cases {
            let mut body = body_before_headers();
            body.extend_from_slice(headers);
            let raw = length_framed(&body);
            let got = headers_of(&raw);
            assert!(got.last().is_some_and(Result::is_err), "{what}: {got:?}");
            assert!(got.len() <= 2, "{what}");
        }
    }

    #[test]
    fn a_cut_record_never_panics_the_header_walk() {
        let headers: &[(&[u8], Option<&[u8]>)] = &[(b"weir.tag", Some(b"A")), (b"x", None)];
        let raw = encode_record_parts(0, 0, Some(b"k"), Some(b"v"), headers);
        let frame = record_frames(&raw, 1).next().unwrap().unwrap();
        for cut in 0..raw.len() {
            let walked: Vec<_> = record_headers(&raw[..cut], &frame).collect();
            assert!(walked.last().is_some_and(Result::is_err), "{cut}");
        }
        // A frame from another section: never read out of range.
        let far = RecordFrame {
            bytes: 10..usize::MAX,
            headers_at: usize::MAX - 1,
            ..frame
        };
        assert!(record_headers(&raw, &far).all(|h| h.is_err()));
    }
}
