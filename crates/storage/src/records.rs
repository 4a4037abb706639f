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
}

/// A record whose framing cannot be followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed record framing at byte {at} of the records")]
pub struct RecordFramingError {
    /// Where the record starts in the section.
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
    })
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
}
