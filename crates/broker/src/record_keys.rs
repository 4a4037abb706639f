//! Read-only scan of the record keys in a produce payload, for the rule that
//! a compacted topic refuses records without a key (Kafka's LogValidator).
//!
//! The payload is never decoded into owned records nor re-encoded: the scan
//! walks each record's framing (length, attributes, timestamp and offset
//! deltas, key length) in place. A compressed batch is decompressed into a
//! scratch buffer first, through a reader that stops at
//! [`SCAN_DECOMPRESSED_BYTES_MAX`], so a small batch that inflates without
//! bound cannot exhaust memory. Framing the scan cannot follow is left to
//! the log, which validates every batch before appending it.

use std::io::Read;

/// RecordBatch v2: bytes before the records section.
const BATCH_HEADER_BYTES: usize = 61;
/// Base offset (8) and batch length (4), the part the length does not count.
const BATCH_LOG_OVERHEAD_BYTES: usize = 12;
/// Where the 16-bit attributes sit.
const ATTRIBUTES_AT: usize = 21;
/// Where the record count sits.
const RECORD_COUNT_AT: usize = 57;
/// Attribute bits holding the codec.
const ATTRIBUTE_COMPRESSION_MASK: i16 = 0x07;
/// Attribute bit of a control batch (transaction markers carry no user key).
const ATTRIBUTE_CONTROL: i16 = 0x20;
/// The most bytes one batch's records may decompress to for the scan. Kafka
/// has no such bound; a batch past it is refused (INVALID_RECORD) rather
/// than inflated without limit.
pub(crate) const SCAN_DECOMPRESSED_BYTES_MAX: u64 = 64 << 20;
/// xerial snappy-java's stream header, which Kafka's Java clients write.
const XERIAL_MAGIC: &[u8] = b"\x82SNAPPY\x00";
/// The xerial header: magic, version and compatible version (4 bytes each).
const XERIAL_HEADER_BYTES: usize = 16;

/// Why the scan could not read the keys of a payload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ScanError {
    /// The records of one batch decompress to more than the scan allows.
    #[error("a record batch decompresses to more than {SCAN_DECOMPRESSED_BYTES_MAX} bytes")]
    TooLarge,
    /// The compressed records do not decompress with the batch's codec.
    #[error("the records of a batch do not decompress with codec {0}")]
    Corrupt(i16),
}

/// The positions (counting records from 0 across the payload's batches) of
/// the records whose key is null. Framing the scan cannot follow ends the
/// scan of that batch: the log refuses such a batch anyway.
pub(crate) fn null_key_positions(mut payload: &[u8]) -> Result<Vec<i32>, ScanError> {
    let mut positions = Vec::new();
    let mut index: i32 = 0;
    while let Some(length) = be_i32(payload, 8) {
        let Some(end) = usize::try_from(length)
            .ok()
            .and_then(|l| l.checked_add(BATCH_LOG_OVERHEAD_BYTES))
        else {
            break;
        };
        let Some(batch) = payload.get(..end) else {
            break;
        };
        let count = be_i32(batch, RECORD_COUNT_AT).unwrap_or(0).max(0);
        let attributes = be_i16(batch, ATTRIBUTES_AT).unwrap_or(0);
        if attributes & ATTRIBUTE_CONTROL == 0 {
            let section = batch.get(BATCH_HEADER_BYTES..).unwrap_or_default();
            let codec = attributes & ATTRIBUTE_COMPRESSION_MASK;
            let records = if codec == 0 {
                std::borrow::Cow::Borrowed(section)
            } else {
                std::borrow::Cow::Owned(decompress(codec, section)?)
            };
            scan_records(&records, count, index, &mut positions);
        }
        index = index.saturating_add(count);
        payload = payload.get(end..).unwrap_or_default();
    }
    Ok(positions)
}

/// Push the position of each null-key record among `count` framed records.
fn scan_records(mut records: &[u8], count: i32, first: i32, out: &mut Vec<i32>) {
    for i in 0..count {
        let Some((length, n)) = read_varint(records) else {
            return;
        };
        let Some(body) = usize::try_from(length)
            .ok()
            .and_then(|l| records.get(n..n.checked_add(l)?))
        else {
            return;
        };
        // attributes (1 byte), timestampDelta (varlong), offsetDelta (varint), keyLength.
        let key_length = body.get(1..).and_then(|rest| {
            let (_, a) = read_varint(rest)?;
            let (_, b) = read_varint(rest.get(a..)?)?;
            read_varint(rest.get(a + b..)?).map(|(key, _)| key)
        });
        match key_length {
            Some(key) if key < 0 => out.push(first.saturating_add(i)),
            Some(_) => {}
            None => return,
        }
        records = records.get(n + body.len()..).unwrap_or_default();
    }
}

/// The records section of a batch decompressed with Kafka codec `codec`,
/// read through a bound of [`SCAN_DECOMPRESSED_BYTES_MAX`].
fn decompress(codec: i16, section: &[u8]) -> Result<Vec<u8>, ScanError> {
    let corrupt = |_| ScanError::Corrupt(codec);
    match codec {
        1 => read_bounded(flate2::read::GzDecoder::new(section), codec),
        2 => snappy(section),
        3 => read_bounded(lz4::Decoder::new(section).map_err(corrupt)?, codec),
        4 => read_bounded(
            zstd::stream::read::Decoder::new(section).map_err(corrupt)?,
            codec,
        ),
        other => Err(ScanError::Corrupt(other)),
    }
}

fn read_bounded(reader: impl Read, codec: i16) -> Result<Vec<u8>, ScanError> {
    let mut out = Vec::new();
    reader
        .take(SCAN_DECOMPRESSED_BYTES_MAX + 1)
        .read_to_end(&mut out)
        .map_err(|_| ScanError::Corrupt(codec))?;
    if out.len() as u64 > SCAN_DECOMPRESSED_BYTES_MAX {
        return Err(ScanError::TooLarge);
    }
    Ok(out)
}

/// Kafka's snappy: xerial framing (blocks each prefixed by its 4-byte
/// length) when the magic is present, else one raw snappy block. Each block
/// states its decompressed size, which is checked before it is allocated.
fn snappy(section: &[u8]) -> Result<Vec<u8>, ScanError> {
    let corrupt = || ScanError::Corrupt(2);
    let mut out = Vec::new();
    let block = |compressed: &[u8], out: &mut Vec<u8>| {
        let len = snap::raw::decompress_len(compressed).map_err(|_| corrupt())?;
        if (out.len() + len) as u64 > SCAN_DECOMPRESSED_BYTES_MAX {
            return Err(ScanError::TooLarge);
        }
        let start = out.len();
        out.resize(start + len, 0);
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
        let len = be_i32(rest, 0).and_then(|l| usize::try_from(l).ok());
        let compressed = len
            .and_then(|l| rest.get(4..4usize.checked_add(l)?))
            .ok_or_else(corrupt)?;
        block(compressed, &mut out)?;
        rest = rest.get(4 + compressed.len()..).unwrap_or_default();
    }
    Ok(out)
}

/// A zigzag varint (up to 64 bits) and the bytes it took.
fn read_varint(b: &[u8]) -> Option<(i64, usize)> {
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

fn be_i32(b: &[u8], at: usize) -> Option<i32> {
    let bytes = b.get(at..at.checked_add(4)?)?;
    Some(i32::from_be_bytes(bytes.try_into().ok()?))
}

fn be_i16(b: &[u8], at: usize) -> Option<i16> {
    let bytes = b.get(at..at.checked_add(2)?)?;
    Some(i16::from_be_bytes(bytes.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use bytes::{Bytes, BytesMut};
    use kafka_protocol::records::{
        Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };

    use super::*;

    fn batch(keys: &[Option<&str>], compression: Compression) -> Bytes {
        let records: Vec<Record> = keys
            .iter()
            .enumerate()
            .map(|(i, key)| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: -1,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                sequence: -1,
                timestamp: 1_700_000_000_000,
                key: key.map(|k| Bytes::copy_from_slice(k.as_bytes())),
                value: Some(Bytes::from_static(b"value")),
                headers: Default::default(),
            })
            .collect();
        let mut buf = BytesMut::new();
        let options = RecordEncodeOptions {
            version: 2,
            compression,
        };
        RecordBatchEncoder::encode(&mut buf, &records, &options).unwrap();
        buf.freeze()
    }

    #[test]
    fn null_keys_are_found_in_every_codec() {
        for codec in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let payload = batch(&[Some("a"), None, Some("c"), None], codec);
            assert_eq!(null_key_positions(&payload), Ok(vec![1, 3]), "{codec:?}");
            let keyed = batch(&[Some("a"), Some("")], codec);
            assert_eq!(null_key_positions(&keyed), Ok(vec![]), "{codec:?}");
        }
    }

    #[test]
    fn positions_count_across_batches_of_one_payload() {
        let mut payload = batch(&[Some("a"), Some("b")], Compression::None).to_vec();
        payload.extend_from_slice(&batch(&[None], Compression::Gzip));
        assert_eq!(null_key_positions(&payload), Ok(vec![2]));
    }

    #[test]
    fn a_batch_inflating_past_the_bound_is_refused() {
        let huge = vec![b'x'; (SCAN_DECOMPRESSED_BYTES_MAX + 1) as usize];
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &huge).unwrap();
        let section = gz.finish().unwrap();
        assert!(section.len() < 1 << 20, "the bomb is small");
        assert_eq!(decompress(1, &section), Err(ScanError::TooLarge));
    }

    #[test]
    fn malformed_payloads_never_panic() {
        let good = batch(&[None, Some("k")], Compression::None);
        for cut in 0..good.len() {
            let _ = null_key_positions(&good[..cut]);
        }
        let mut garbage = good.to_vec();
        for byte in garbage.iter_mut().skip(BATCH_HEADER_BYTES) {
            *byte = 0xff;
        }
        let _ = null_key_positions(&garbage);
        let mut codec = good.to_vec();
        codec[ATTRIBUTES_AT + 1] |= 0x03;
        assert!(null_key_positions(&codec).is_err());
    }
}
