//! Kafka RecordBatch v2 headers: validation of a produce payload, the few
//! header patches the broker may make, and reading record timestamps for
//! time look-ups. Records themselves are never re-encoded: a user's batch is
//! stored byte for byte (duplicate header keys and all).

use bytes::Bytes;
use kafka_protocol::records::{Compression, RecordBatchDecoder};

use crate::error::AppendError;
use crate::format::{be_i16, be_i32, be_i64, be_u32};

/// Bytes of the RecordBatch v2 header.
pub(crate) const BATCH_HEADER_BYTES: usize = 61;
/// First byte covered by the batch CRC.
const CRC_START: usize = 21;
/// Attribute bit: timestamps are the broker's append time.
const ATTR_LOG_APPEND_TIME: i16 = 0x08;
/// Attribute bits selecting the compression codec.
const ATTR_COMPRESSION_MASK: i16 = 0x07;
/// Attribute bit: a control batch (transaction markers), which only the
/// broker itself may write.
const ATTR_CONTROL: i16 = 0x20;
/// The highest codec id Kafka defines (0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd).
const CODEC_ID_MAX: i16 = 4;
/// The most records one batch may announce. An uncompressed batch is also
/// bounded by its length (see [`RECORD_BYTES_MIN`]); a compressed one cannot
/// be checked that way without decompressing it, so this bound is what keeps
/// a small batch from moving the log end far (librdkafka's largest
/// `batch.num.messages` is 1,000,000).
pub(crate) const BATCH_RECORDS_MAX: i32 = 1 << 20;
/// The fewest bytes one record takes in an uncompressed batch: a 1-byte
/// length varint, then attributes (1), timestampDelta (1), offsetDelta (1),
/// key length (1, for a null key), value length (1) and header count (1).
const RECORD_BYTES_MIN: usize = 7;

/// The header fields of one validated batch inside a payload.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BatchInfo {
    /// Byte range of the batch inside the payload.
    pub start: usize,
    pub len: usize,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
}

impl BatchInfo {
    /// The sequence of the batch's last record, wrapping at `i32::MAX` as Kafka does.
    pub fn last_sequence(&self) -> i32 {
        increment_sequence(self.base_sequence, self.last_offset_delta)
    }
}

/// `seq + delta`, wrapping from `i32::MAX` to 0.
pub(crate) fn increment_sequence(seq: i32, delta: i32) -> i32 {
    ((i64::from(seq) + i64::from(delta)) % (i64::from(i32::MAX) + 1)) as i32
}

/// Walk a produce payload batch by batch and validate each header.
pub(crate) fn parse_payload(
    payload: &[u8],
    max_message_bytes: u32,
) -> Result<Vec<BatchInfo>, AppendError> {
    parse(payload, max_message_bytes, true)
}

/// Walk batches a leader already stored (offsets assigned) and check their
/// framing and CRC only: a leader's log may hold what a client may not
/// send (control batches, the empty batches compaction leaves).
pub(crate) fn parse_replica_payload(payload: &[u8]) -> Result<Vec<BatchInfo>, AppendError> {
    parse(payload, u32::MAX, false)
}

fn parse(
    payload: &[u8],
    max_message_bytes: u32,
    from_client: bool,
) -> Result<Vec<BatchInfo>, AppendError> {
    if payload.is_empty() {
        return Err(AppendError::InvalidBatch("empty record set"));
    }
    let mut out = Vec::with_capacity((payload.len() / BATCH_HEADER_BYTES).min(64));
    let mut at = 0usize;
    while at < payload.len() {
        let rest = payload.get(at..).unwrap_or_default();
        let header = rest
            .get(..BATCH_HEADER_BYTES)
            .ok_or(AppendError::CorruptBatch)?;
        let batch_length = be_i32(header, 8).ok_or(AppendError::CorruptBatch)?;
        let len = usize::try_from(batch_length)
            .ok()
            .and_then(|l| l.checked_add(12))
            .filter(|l| *l >= BATCH_HEADER_BYTES && *l <= rest.len())
            .ok_or(AppendError::CorruptBatch)?;
        if header.get(16) != Some(&2) {
            return Err(AppendError::CorruptBatch);
        }
        let limit = (max_message_bytes as usize).min(crate::format::ENTRY_BATCH_BYTES_MAX);
        if len > limit {
            return Err(AppendError::MessageTooLarge {
                size: len,
                max: limit as u32,
            });
        }
        let batch = rest.get(..len).ok_or(AppendError::CorruptBatch)?;
        let crc = be_u32(batch, 17).ok_or(AppendError::CorruptBatch)?;
        if crc32c::crc32c(batch.get(CRC_START..).unwrap_or_default()) != crc {
            return Err(AppendError::CorruptBatch);
        }
        let info = read_header(batch, at, len).ok_or(AppendError::CorruptBatch)?;
        if from_client {
            check_contents(&info, batch)?;
        }
        out.push(info);
        at += len;
    }
    Ok(out)
}

/// Check what a client may not put in a batch whose CRC is valid: an
/// unknown codec, the control bit, and a record count its length or
/// `lastOffsetDelta` cannot back (it decides how far offsets move).
fn check_contents(info: &BatchInfo, batch: &[u8]) -> Result<(), AppendError> {
    let codec = info.attributes & ATTR_COMPRESSION_MASK;
    if codec > CODEC_ID_MAX {
        return Err(AppendError::UnsupportedCompression { codec });
    }
    if info.attributes & ATTR_CONTROL != 0 {
        return Err(AppendError::InvalidBatch(
            "clients are not allowed to write control records",
        ));
    }
    let count = be_i32(batch, 57).ok_or(AppendError::CorruptBatch)?;
    if count <= 0 {
        return Err(AppendError::InvalidBatch("batch holds no records"));
    }
    let records_bytes = batch.len().saturating_sub(BATCH_HEADER_BYTES);
    let backed = if codec == 0 {
        records_bytes / RECORD_BYTES_MIN
    } else {
        usize::from(records_bytes > 0) * BATCH_RECORDS_MAX as usize
    };
    if count > BATCH_RECORDS_MAX || count as usize > backed {
        return Err(AppendError::InvalidRecordCount {
            count,
            bytes: batch.len(),
        });
    }
    if info.last_offset_delta.checked_add(1) != Some(count) {
        return Err(AppendError::InvalidBatch(
            "lastOffsetDelta does not match the record count",
        ));
    }
    Ok(())
}

fn read_header(batch: &[u8], start: usize, len: usize) -> Option<BatchInfo> {
    Some(BatchInfo {
        start,
        len,
        attributes: be_i16(batch, 21)?,
        last_offset_delta: be_i32(batch, 23)?,
        max_timestamp: be_i64(batch, 35)?,
        producer_id: be_i64(batch, 43)?,
        producer_epoch: be_i16(batch, 51)?,
        base_sequence: be_i32(batch, 53)?,
    })
}

/// Set the broker-owned fields outside the CRC: base offset and leader epoch.
pub(crate) fn patch_offsets(batch: &mut [u8], base_offset: i64, leader_epoch: i32) {
    if let Some(b) = batch.get_mut(0..8) {
        b.copy_from_slice(&base_offset.to_be_bytes());
    }
    if let Some(b) = batch.get_mut(12..16) {
        b.copy_from_slice(&leader_epoch.to_be_bytes());
    }
}

/// Stamp a batch with the broker's append time (`LogAppendTime`): attribute
/// bit, first and max timestamps, then a new CRC. Only header bytes change.
pub(crate) fn stamp_log_append_time(batch: &mut [u8], now_ms: i64) -> i16 {
    let attributes = be_i16(batch, 21).unwrap_or(0) | ATTR_LOG_APPEND_TIME;
    if let Some(b) = batch.get_mut(21..23) {
        b.copy_from_slice(&attributes.to_be_bytes());
    }
    if let Some(b) = batch.get_mut(27..35) {
        b.copy_from_slice(&now_ms.to_be_bytes());
    }
    if let Some(b) = batch.get_mut(35..43) {
        b.copy_from_slice(&now_ms.to_be_bytes());
    }
    let crc = crc32c::crc32c(batch.get(CRC_START..).unwrap_or_default());
    if let Some(b) = batch.get_mut(17..21) {
        b.copy_from_slice(&crc.to_be_bytes());
    }
    attributes
}

/// The first record of a stored batch with offset >= `min_offset` and
/// timestamp >= `timestamp`, as (offset, timestamp).
pub(crate) fn find_record_at_or_after(
    batch: &Bytes,
    min_offset: i64,
    timestamp: i64,
) -> Option<(i64, i64)> {
    let base_offset = be_i64(batch, 0)?;
    let attributes = be_i16(batch, 21)?;
    let last_offset_delta = be_i32(batch, 23)?;
    let max_timestamp = be_i64(batch, 35)?;
    if attributes & ATTR_LOG_APPEND_TIME != 0 {
        // Every record carries the append time, which is the batch's max timestamp.
        let offset = base_offset.max(min_offset);
        let in_batch = offset <= base_offset + i64::from(last_offset_delta);
        return (in_batch && max_timestamp >= timestamp).then_some((offset, max_timestamp));
    }
    if attributes & ATTR_COMPRESSION_MASK == Compression::None as i16 {
        return walk_uncompressed(batch, min_offset, timestamp);
    }
    let mut buf = batch.clone();
    let set = RecordBatchDecoder::decode(&mut buf).ok()?;
    set.records
        .iter()
        .find(|r| r.offset >= min_offset && r.timestamp >= timestamp)
        .map(|r| (r.offset, r.timestamp))
}

/// Walk the records of an uncompressed batch reading only their length,
/// timestamp delta and offset delta.
fn walk_uncompressed(batch: &[u8], min_offset: i64, timestamp: i64) -> Option<(i64, i64)> {
    let base_offset = be_i64(batch, 0)?;
    let first_timestamp = be_i64(batch, 27)?;
    let count = be_i32(batch, 57)?.clamp(0, BATCH_RECORDS_MAX);
    let mut at = BATCH_HEADER_BYTES;
    for _ in 0..count {
        let (len, n) = read_varint(batch.get(at..)?)?;
        let body_start = at + n;
        let body = batch.get(body_start..body_start.checked_add(usize::try_from(len).ok()?)?)?;
        // attributes (1 byte), then timestampDelta (varlong), offsetDelta (varint).
        let (ts_delta, n1) = read_varint(body.get(1..)?)?;
        let (offset_delta, _) = read_varint(body.get(1 + n1..)?)?;
        let offset = base_offset.checked_add(offset_delta)?;
        let ts = first_timestamp.checked_add(ts_delta)?;
        if offset >= min_offset && ts >= timestamp {
            return Some((offset, ts));
        }
        at = body_start + body.len();
    }
    None
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
pub(crate) mod test_batches {
    //! Builders of real RecordBatch v2 bytes for tests, via kafka-protocol's encoder.

    use bytes::{Bytes, BytesMut};
    use kafka_protocol::indexmap::IndexMap;
    use kafka_protocol::records::{
        Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };

    /// A batch of `count` records with timestamps `timestamps[i]` (or `base_ts + i`).
    pub fn batch_with(
        count: usize,
        value_len: usize,
        timestamps: &[i64],
        compression: Compression,
        producer: Option<(i64, i16, i32)>,
    ) -> Bytes {
        let (pid, epoch, seq) = producer.unwrap_or((-1, -1, -1));
        let records: Vec<Record> = (0..count)
            .map(|i| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: -1,
                producer_id: pid,
                producer_epoch: epoch,
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                // The encoder groups records whose offset - sequence is constant.
                sequence: if seq < 0 {
                    i as i32 - 1
                } else {
                    seq + i as i32
                },
                timestamp: timestamps.get(i).copied().unwrap_or(1_000 + i as i64),
                key: Some(Bytes::from(format!("k{i}"))),
                value: Some(Bytes::from(vec![b'v'; value_len])),
                headers: IndexMap::new(),
            })
            .collect();
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            &records,
            &RecordEncodeOptions {
                version: 2,
                compression,
            },
        )
        .unwrap();
        buf.freeze()
    }

    /// A plain uncompressed batch of `count` records.
    pub fn batch(count: usize, value_len: usize) -> Bytes {
        batch_with(count, value_len, &[], Compression::None, None)
    }
}

#[cfg(test)]
mod tests {
    use super::test_batches::*;
    use super::*;

    #[test]
    fn valid_batch_is_accepted_and_described() {
        let b = batch(3, 10);
        let infos = parse_payload(&b, 1 << 20).unwrap();
        assert_eq!(infos.len(), 1);
        assert_eq!(infos[0].last_offset_delta, 2);
        assert_eq!(infos[0].len, b.len());
    }

    #[test]
    fn payload_with_two_batches_is_walked_by_length() {
        let mut p = batch(2, 5).to_vec();
        p.extend_from_slice(&batch(4, 5));
        let infos = parse_payload(&p, 1 << 20).unwrap();
        assert_eq!(
            infos
                .iter()
                .map(|i| i.last_offset_delta)
                .collect::<Vec<_>>(),
            vec![1, 3]
        );
    }

    #[test]
    fn flipped_bit_in_records_is_a_corrupt_batch() {
        let mut b = batch(2, 5).to_vec();
        let last = b.len() - 1;
        b[last] ^= 0x40;
        assert!(matches!(
            parse_payload(&b, 1 << 20),
            Err(AppendError::CorruptBatch)
        ));
    }

    #[test]
    fn truncated_batch_is_a_corrupt_batch() {
        let b = batch(2, 5);
        for cut in [0usize, 10, 60, b.len() - 1] {
            let r = parse_payload(&b[..cut], 1 << 20);
            assert!(
                matches!(
                    r,
                    Err(AppendError::CorruptBatch | AppendError::InvalidBatch(_))
                ),
                "{cut}"
            );
        }
    }

    #[test]
    fn batch_over_max_message_bytes_is_too_large() {
        let b = batch(2, 500);
        assert!(matches!(
            parse_payload(&b, 100),
            Err(AppendError::MessageTooLarge { .. })
        ));
    }

    #[test]
    fn patching_offsets_keeps_the_crc_valid() {
        let mut b = batch(2, 5).to_vec();
        patch_offsets(&mut b, 1234, 7);
        assert!(parse_payload(&b, 1 << 20).is_ok());
        assert_eq!(be_i64(&b, 0), Some(1234));
    }

    #[test]
    fn log_append_time_stamp_recomputes_the_crc() {
        let mut b = batch(2, 5).to_vec();
        stamp_log_append_time(&mut b, 5_000);
        let infos = parse_payload(&b, 1 << 20).unwrap();
        assert_eq!(infos[0].max_timestamp, 5_000);
        let found = find_record_at_or_after(&Bytes::from(b), 0, 4_000);
        assert_eq!(found, Some((0, 5_000)));
    }

    #[test]
    fn record_timestamps_are_found_in_plain_and_compressed_batches() {
        for c in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let mut b = batch_with(4, 8, &[10, 30, 20, 40], c, None).to_vec();
            patch_offsets(&mut b, 100, 0);
            let b = Bytes::from(b);
            assert_eq!(find_record_at_or_after(&b, 0, 15), Some((101, 30)), "{c:?}");
            assert_eq!(find_record_at_or_after(&b, 0, 35), Some((103, 40)), "{c:?}");
            assert_eq!(
                find_record_at_or_after(&b, 102, 0),
                Some((102, 20)),
                "{c:?}"
            );
            assert_eq!(find_record_at_or_after(&b, 0, 41), None, "{c:?}");
        }
    }

    /// `b` with `edit` applied to its bytes and the CRC recomputed, so only
    /// the edited field is wrong.
    fn edited(b: &[u8], edit: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        let mut v = b.to_vec();
        edit(&mut v);
        let crc = crc32c::crc32c(&v[CRC_START..]);
        v[17..21].copy_from_slice(&crc.to_be_bytes());
        v
    }

    fn set_count(v: &mut [u8], count: i32, last_offset_delta: i32) {
        v[57..61].copy_from_slice(&count.to_be_bytes());
        v[23..27].copy_from_slice(&last_offset_delta.to_be_bytes());
    }

    #[test]
    fn a_header_only_batch_claiming_two_billion_records_is_refused() {
        let b = batch(1, 0);
        let mut header = b[..BATCH_HEADER_BYTES].to_vec();
        header[8..12].copy_from_slice(&((BATCH_HEADER_BYTES - 12) as i32).to_be_bytes());
        let forged = edited(&header, |v| set_count(v, i32::MAX, i32::MAX - 1));
        assert_eq!(forged.len(), BATCH_HEADER_BYTES);
        assert!(matches!(
            parse_payload(&forged, 1 << 20),
            Err(AppendError::InvalidRecordCount {
                count: i32::MAX,
                bytes: BATCH_HEADER_BYTES
            })
        ));
    }

    #[test]
    fn an_uncompressed_count_its_bytes_cannot_hold_is_refused() {
        let b = batch(3, 0);
        // Each record here is at least the minimum size; one more than the
        // bytes allow is refused, the true count is accepted.
        let room = ((b.len() - BATCH_HEADER_BYTES) / RECORD_BYTES_MIN) as i32;
        let over = edited(&b, |v| set_count(v, room + 1, room));
        assert!(matches!(
            parse_payload(&over, 1 << 20),
            Err(AppendError::InvalidRecordCount { .. })
        ));
        assert!(parse_payload(&b, 1 << 20).is_ok());
    }

    #[test]
    fn a_compressed_count_over_the_batch_limit_is_refused() {
        let b = batch_with(3, 8, &[], Compression::Zstd, None);
        let over = edited(&b, |v| {
            set_count(v, BATCH_RECORDS_MAX + 1, BATCH_RECORDS_MAX)
        });
        assert!(matches!(
            parse_payload(&over, 1 << 20),
            Err(AppendError::InvalidRecordCount { .. })
        ));
        // A compressed count is not checked against its bytes, only bounded.
        let many = edited(&b, |v| set_count(v, 1000, 999));
        assert!(parse_payload(&many, 1 << 20).is_ok());
    }

    #[test]
    fn a_count_that_disagrees_with_last_offset_delta_is_refused() {
        let b = batch(3, 0);
        let wrong = edited(&b, |v| set_count(v, 3, 5));
        assert!(matches!(
            parse_payload(&wrong, 1 << 20),
            Err(AppendError::InvalidBatch(_))
        ));
    }

    #[test]
    fn codecs_five_to_seven_are_unsupported() {
        let b = batch(2, 5);
        for codec in 5i16..=7 {
            let v = edited(&b, |v| {
                let attrs = (be_i16(v, 21).unwrap() & !ATTR_COMPRESSION_MASK) | codec;
                v[21..23].copy_from_slice(&attrs.to_be_bytes());
            });
            assert!(
                matches!(
                    parse_payload(&v, 1 << 20),
                    Err(AppendError::UnsupportedCompression { codec: c }) if c == codec
                ),
                "codec {codec}"
            );
        }
    }

    #[test]
    fn a_client_control_batch_is_an_invalid_record() {
        let b = batch(1, 5);
        let v = edited(&b, |v| {
            let attrs = be_i16(v, 21).unwrap() | ATTR_CONTROL;
            v[21..23].copy_from_slice(&attrs.to_be_bytes());
        });
        assert!(matches!(
            parse_payload(&v, 1 << 20),
            Err(AppendError::InvalidBatch(_))
        ));
    }

    #[test]
    fn sequence_wraps_at_i32_max() {
        assert_eq!(increment_sequence(i32::MAX, 1), 0);
        assert_eq!(increment_sequence(i32::MAX - 1, 3), 1);
        assert_eq!(increment_sequence(5, 2), 7);
    }
}
