//! Kafka RecordBatch v2 headers: the one parser of the 61-byte header
//! ([`RecordBatchHeader`]) and of a payload's batch framing ([`batches`]),
//! validation of a produce payload, the few header patches the broker may
//! make, and reading record timestamps for time look-ups. Records themselves
//! are never re-encoded: a user's batch is stored byte for byte (duplicate
//! header keys and all).

use std::ops::{Deref, DerefMut};

use bytes::Bytes;

use crate::error::AppendError;
use crate::format::{be_i16, be_i32, be_i64, be_u32};
use crate::producer::TxnMarker;
use crate::records::{self, DecompressError, decompress_records, record_frames};
use kafka_protocol::messages::EndTxnMarker;
use kafka_protocol::protocol::{Decodable, Encodable};

/// Bytes of the RecordBatch v2 header.
pub(crate) const BATCH_HEADER_BYTES: usize = RecordBatchHeader::BYTES;
/// First byte covered by the batch CRC.
const CRC_START: usize = RecordBatchHeader::ATTRIBUTES_AT;
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
/// The most bytes a compressed batch's records may decompress to when a
/// time look-up reads their timestamps. A batch past it is answered at
/// batch granularity (its base offset and max timestamp), as a time index
/// would, instead of being inflated without limit.
const TIME_LOOKUP_DECOMPRESSED_BYTES_MAX: usize = 64 << 20;

/// The fixed header of a Kafka RecordBatch (magic 2), field by field, and
/// where each field sits. This is the one place in Weir that knows the
/// layout; everything else reads a batch through it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordBatchHeader {
    /// Offset of the first record (the broker assigns it on append).
    pub base_offset: i64,
    /// Bytes after this field: the batch is `batch_length + 12` bytes.
    pub batch_length: i32,
    /// `partitionLeaderEpoch`, set by the broker on append.
    pub partition_leader_epoch: i32,
    /// The format version: 2.
    pub magic: i8,
    /// CRC32C of the bytes from the attributes to the end of the batch.
    pub crc: u32,
    /// Codec (bits 0-2), timestamp type, transactional and control bits.
    pub attributes: i16,
    /// The last record's offset minus the base offset.
    pub last_offset_delta: i32,
    /// The first record's timestamp (`baseTimestamp`).
    pub base_timestamp: i64,
    /// The largest record timestamp.
    pub max_timestamp: i64,
    /// The idempotent producer's id, or -1.
    pub producer_id: i64,
    /// The producer's epoch, or -1.
    pub producer_epoch: i16,
    /// The first record's sequence number, or -1.
    pub base_sequence: i32,
    /// How many records follow the header.
    pub record_count: i32,
}

impl RecordBatchHeader {
    /// Bytes of the header; the records section follows.
    pub const BYTES: usize = 61;
    /// Bytes before the part that `batch_length` counts (base offset, length).
    pub const LOG_OVERHEAD_BYTES: usize = 12;
    /// Where `baseOffset` (i64) sits.
    pub const BASE_OFFSET_AT: usize = 0;
    /// Where `batchLength` (i32) sits.
    pub const BATCH_LENGTH_AT: usize = 8;
    /// Where `partitionLeaderEpoch` (i32) sits.
    pub const PARTITION_LEADER_EPOCH_AT: usize = 12;
    /// Where `magic` (i8) sits.
    pub const MAGIC_AT: usize = 16;
    /// Where the CRC32C (u32) sits.
    pub const CRC_AT: usize = 17;
    /// Where `attributes` (i16) sits; the CRC covers from here to the end.
    pub const ATTRIBUTES_AT: usize = 21;
    /// Where `lastOffsetDelta` (i32) sits.
    pub const LAST_OFFSET_DELTA_AT: usize = 23;
    /// Where `baseTimestamp` (i64) sits.
    pub const BASE_TIMESTAMP_AT: usize = 27;
    /// Where `maxTimestamp` (i64) sits.
    pub const MAX_TIMESTAMP_AT: usize = 35;
    /// Where `producerId` (i64) sits.
    pub const PRODUCER_ID_AT: usize = 43;
    /// Where `producerEpoch` (i16) sits.
    pub const PRODUCER_EPOCH_AT: usize = 51;
    /// Where `baseSequence` (i32) sits.
    pub const BASE_SEQUENCE_AT: usize = 53;
    /// Where the record count (i32) sits.
    pub const RECORD_COUNT_AT: usize = 57;

    /// Attribute bits selecting the compression codec.
    pub const COMPRESSION_MASK: i16 = 0x07;
    /// Attribute bit: timestamps are the broker's append time.
    pub const LOG_APPEND_TIME: i16 = 0x08;
    /// Attribute bit: the batch was written inside a Kafka transaction.
    pub const TRANSACTIONAL: i16 = 0x10;
    /// Attribute bit: a control batch (transaction markers), which only the
    /// broker itself may write.
    pub const CONTROL: i16 = 0x20;

    /// The header at the start of `batch`; `None` if fewer than
    /// [`Self::BYTES`] bytes are there. Nothing is validated.
    pub fn parse(batch: &[u8]) -> Option<Self> {
        let header = batch.get(..Self::BYTES)?;
        Some(Self {
            base_offset: be_i64(header, Self::BASE_OFFSET_AT)?,
            batch_length: be_i32(header, Self::BATCH_LENGTH_AT)?,
            partition_leader_epoch: be_i32(header, Self::PARTITION_LEADER_EPOCH_AT)?,
            magic: i8::from_be_bytes([*header.get(Self::MAGIC_AT)?]),
            crc: be_u32(header, Self::CRC_AT)?,
            attributes: be_i16(header, Self::ATTRIBUTES_AT)?,
            last_offset_delta: be_i32(header, Self::LAST_OFFSET_DELTA_AT)?,
            base_timestamp: be_i64(header, Self::BASE_TIMESTAMP_AT)?,
            max_timestamp: be_i64(header, Self::MAX_TIMESTAMP_AT)?,
            producer_id: be_i64(header, Self::PRODUCER_ID_AT)?,
            producer_epoch: be_i16(header, Self::PRODUCER_EPOCH_AT)?,
            base_sequence: be_i32(header, Self::BASE_SEQUENCE_AT)?,
            record_count: be_i32(header, Self::RECORD_COUNT_AT)?,
        })
    }

    /// The whole batch's size (`batch_length + 12`); `None` when the length
    /// is negative or cannot hold the header.
    pub fn batch_bytes(&self) -> Option<usize> {
        usize::try_from(self.batch_length)
            .ok()?
            .checked_add(Self::LOG_OVERHEAD_BYTES)
            .filter(|len| *len >= Self::BYTES)
    }

    /// Kafka's codec id (0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd; 5-7 unknown).
    pub fn codec(&self) -> i16 {
        self.attributes & Self::COMPRESSION_MASK
    }

    /// Whether the timestamps are the broker's append time.
    pub fn is_log_append_time(&self) -> bool {
        self.attributes & Self::LOG_APPEND_TIME != 0
    }

    /// Whether the batch was written inside a Kafka transaction.
    pub fn is_transactional(&self) -> bool {
        self.attributes & Self::TRANSACTIONAL != 0
    }

    /// Whether this is a control batch (transaction markers).
    pub fn is_control(&self) -> bool {
        self.attributes & Self::CONTROL != 0
    }

    /// The last record's offset, `base_offset + last_offset_delta`.
    pub fn last_offset(&self) -> i64 {
        self.base_offset
            .saturating_add(i64::from(self.last_offset_delta))
    }

    /// The sequence of the batch's last record, wrapping at `i32::MAX` as Kafka does.
    pub fn last_sequence(&self) -> i32 {
        increment_sequence(self.base_sequence, self.last_offset_delta)
    }
}

/// Why [`batches`] stopped before the end of a payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BatchFramingError {
    /// Fewer bytes than a batch header are left.
    #[error("{left} bytes left at byte {at}, fewer than a batch header")]
    ShortHeader {
        /// Where the batch starts in the payload.
        at: usize,
        /// The bytes left from there.
        left: usize,
    },
    /// The batch length is negative, shorter than the header, or runs past the payload.
    #[error("batch length {batch_length} at byte {at} is out of range")]
    Length {
        /// Where the batch starts in the payload.
        at: usize,
        /// The `batchLength` field read there.
        batch_length: i32,
    },
}

/// The batches of a payload (concatenated RecordBatches, as produced,
/// fetched or stored), each with its parsed header and its bytes. A batch
/// that cannot be framed ends the walk with an error; use
/// `.map_while(Result::ok)` to take the whole batches before it.
pub fn batches(payload: &[u8]) -> Batches<'_> {
    Batches { payload, at: 0 }
}

/// Iterator of [`batches`].
#[derive(Debug, Clone)]
pub struct Batches<'a> {
    payload: &'a [u8],
    at: usize,
}

impl<'a> Iterator for Batches<'a> {
    type Item = Result<(RecordBatchHeader, &'a [u8]), BatchFramingError>;

    fn next(&mut self) -> Option<Self::Item> {
        let at = self.at;
        let rest = self.payload.get(at..).filter(|r| !r.is_empty())?;
        let framed = match RecordBatchHeader::parse(rest) {
            None => Err(BatchFramingError::ShortHeader {
                at,
                left: rest.len(),
            }),
            Some(header) => header
                .batch_bytes()
                .and_then(|len| rest.get(..len))
                .map(|batch| (header, batch))
                .ok_or(BatchFramingError::Length {
                    at,
                    batch_length: header.batch_length,
                }),
        };
        self.at = match &framed {
            Ok((_, batch)) => at + batch.len(),
            Err(_) => self.payload.len(),
        };
        Some(framed)
    }
}

/// One validated batch inside a produce payload: where it sits and its
/// header (whose fields read through, as `info.producer_id`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct BatchInfo {
    /// Byte range of the batch inside the payload.
    pub start: usize,
    pub len: usize,
    pub header: RecordBatchHeader,
}

impl Deref for BatchInfo {
    type Target = RecordBatchHeader;

    fn deref(&self) -> &RecordBatchHeader {
        &self.header
    }
}

impl DerefMut for BatchInfo {
    fn deref_mut(&mut self) -> &mut RecordBatchHeader {
        &mut self.header
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
    let mut start = 0usize;
    for framed in batches(payload) {
        let (header, batch) = framed.map_err(|_| AppendError::CorruptBatch)?;
        if header.magic != 2 {
            return Err(AppendError::CorruptBatch);
        }
        let limit = (max_message_bytes as usize).min(crate::format::ENTRY_BATCH_BYTES_MAX);
        if batch.len() > limit {
            return Err(AppendError::MessageTooLarge {
                size: batch.len(),
                max: limit as u32,
            });
        }
        if crc32c::crc32c(batch.get(CRC_START..).unwrap_or_default()) != header.crc {
            return Err(AppendError::CorruptBatch);
        }
        if from_client {
            check_contents(&header, batch.len())?;
        }
        out.push(BatchInfo {
            start,
            len: batch.len(),
            header,
        });
        start += batch.len();
    }
    Ok(out)
}

/// Check what a client may not put in a batch whose CRC is valid: an
/// unknown codec, the control bit, and a record count its length or
/// `lastOffsetDelta` cannot back (it decides how far offsets move).
fn check_contents(header: &RecordBatchHeader, batch_bytes: usize) -> Result<(), AppendError> {
    let codec = header.codec();
    if codec > CODEC_ID_MAX {
        return Err(AppendError::UnsupportedCompression { codec });
    }
    if header.is_control() {
        return Err(AppendError::InvalidBatch(
            "clients are not allowed to write control records",
        ));
    }
    let count = header.record_count;
    if count <= 0 {
        return Err(AppendError::InvalidBatch("batch holds no records"));
    }
    let records_bytes = batch_bytes.saturating_sub(BATCH_HEADER_BYTES);
    let backed = if codec == 0 {
        records_bytes / RECORD_BYTES_MIN
    } else {
        usize::from(records_bytes > 0) * BATCH_RECORDS_MAX as usize
    };
    if count > BATCH_RECORDS_MAX || count as usize > backed {
        return Err(AppendError::InvalidRecordCount {
            count,
            bytes: batch_bytes,
        });
    }
    if header.last_offset_delta.checked_add(1) != Some(count) {
        return Err(AppendError::InvalidBatch(
            "lastOffsetDelta does not match the record count",
        ));
    }
    Ok(())
}

/// Write `value` at `at` of `batch` (nothing if the batch is too short).
fn put(batch: &mut [u8], at: usize, value: &[u8]) {
    if let Some(b) = batch.get_mut(at..at + value.len()) {
        b.copy_from_slice(value);
    }
}

/// Set the broker-owned fields outside the CRC: base offset and leader epoch.
pub(crate) fn patch_offsets(batch: &mut [u8], base_offset: i64, leader_epoch: i32) {
    put(
        batch,
        RecordBatchHeader::BASE_OFFSET_AT,
        &base_offset.to_be_bytes(),
    );
    put(
        batch,
        RecordBatchHeader::PARTITION_LEADER_EPOCH_AT,
        &leader_epoch.to_be_bytes(),
    );
}

/// Stamp a batch with the broker's append time (`LogAppendTime`): attribute
/// bit, first and max timestamps, then a new CRC. Only header bytes change.
pub(crate) fn stamp_log_append_time(batch: &mut [u8], now_ms: i64) -> i16 {
    let attributes = be_i16(batch, RecordBatchHeader::ATTRIBUTES_AT).unwrap_or(0)
        | RecordBatchHeader::LOG_APPEND_TIME;
    put(
        batch,
        RecordBatchHeader::ATTRIBUTES_AT,
        &attributes.to_be_bytes(),
    );
    put(
        batch,
        RecordBatchHeader::BASE_TIMESTAMP_AT,
        &now_ms.to_be_bytes(),
    );
    put(
        batch,
        RecordBatchHeader::MAX_TIMESTAMP_AT,
        &now_ms.to_be_bytes(),
    );
    let crc = crc32c::crc32c(batch.get(CRC_START..).unwrap_or_default());
    put(batch, RecordBatchHeader::CRC_AT, &crc.to_be_bytes());
    attributes
}

/// The first record of a stored batch with offset >= `min_offset` and
/// timestamp >= `timestamp`, as (offset, timestamp).
pub(crate) fn find_record_at_or_after(
    batch: &Bytes,
    min_offset: i64,
    timestamp: i64,
) -> Option<(i64, i64)> {
    find_record_within(
        batch,
        min_offset,
        timestamp,
        TIME_LOOKUP_DECOMPRESSED_BYTES_MAX,
    )
}

/// [`find_record_at_or_after`], inflating a compressed batch's records to
/// at most `decompressed_bytes_max`.
fn find_record_within(
    batch: &Bytes,
    min_offset: i64,
    timestamp: i64,
    decompressed_bytes_max: usize,
) -> Option<(i64, i64)> {
    let header = RecordBatchHeader::parse(batch)?;
    // The whole batch at once: every record carries the append time (the
    // max timestamp), or its records are too large to inflate for a look-up.
    let whole_batch = || {
        let offset = header.base_offset.max(min_offset);
        let in_batch = offset <= header.last_offset();
        (in_batch && header.max_timestamp >= timestamp).then_some((offset, header.max_timestamp))
    };
    if header.is_log_append_time() {
        return whole_batch();
    }
    let section = batch.get(BATCH_HEADER_BYTES..)?;
    let records = match decompress_records(header.codec(), section, decompressed_bytes_max) {
        Ok(records) => records,
        Err(DecompressError::TooLarge { .. }) => return whole_batch(),
        Err(DecompressError::Corrupt { .. }) => return None,
    };
    let count = header.record_count.clamp(0, BATCH_RECORDS_MAX);
    record_frames(&records, count)
        .map_while(Result::ok)
        .map(|r: records::RecordFrame| {
            (
                header.base_offset.saturating_add(r.offset_delta),
                header.base_timestamp.saturating_add(r.timestamp_delta),
            )
        })
        .find(|(offset, ts)| *offset >= min_offset && *ts >= timestamp)
}

/// The marker a control batch carries: its first record's key (version,
/// then type: 0 ABORT, 1 COMMIT) and value (version, then the coordinator
/// epoch). `None` for a batch that is not a control batch or whose first
/// record is not a transaction marker.
pub fn control_marker(batch: &[u8]) -> Option<TxnMarker> {
    let header = RecordBatchHeader::parse(batch)?;
    if !header.is_control() || header.codec() != 0 {
        return None;
    }
    let section = batch.get(BATCH_HEADER_BYTES..)?;
    let first = record_frames(section, header.record_count.min(1))
        .next()?
        .ok()?;
    let key = section.get(first.key?)?;
    let commit = match be_i16(key, 2)? {
        0 => false,
        1 => true,
        _ => return None,
    };
    // The value: its version, then Kafka's EndTxnMarker.
    let coordinator_epoch = first
        .value
        .and_then(|v| section.get(v))
        .and_then(|v| v.get(2..))
        .and_then(|mut v| EndTxnMarker::decode(&mut v, 0).ok())
        .map_or(-1, |m| m.coordinator_epoch);
    Some(TxnMarker {
        commit,
        coordinator_epoch,
    })
}

/// A control batch holding one transaction marker for `producer_id` at
/// `producer_epoch`, stamped `timestamp`, base offset 0 (the append sets it).
pub(crate) fn control_batch(
    producer_id: i64,
    producer_epoch: i16,
    marker: TxnMarker,
    timestamp: i64,
) -> Result<Bytes, AppendError> {
    use kafka_protocol::records::{
        Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };
    // The key: its version (0), then the control record type.
    let mut key = [0u8; 4];
    key[2..4].copy_from_slice(&i16::from(marker.commit).to_be_bytes());
    // The value: its version (0), then Kafka's EndTxnMarker.
    let mut value = bytes::BytesMut::from(&[0u8, 0][..]);
    EndTxnMarker::default()
        .with_coordinator_epoch(marker.coordinator_epoch)
        .encode(&mut value, 0)
        .map_err(|_| AppendError::InvalidBatch("a transaction marker could not be encoded"))?;
    let record = Record {
        transactional: true,
        control: true,
        delete_horizon: false,
        partition_leader_epoch: -1,
        producer_id,
        producer_epoch,
        timestamp_type: TimestampType::Creation,
        offset: 0,
        sequence: -1,
        timestamp,
        key: Some(Bytes::copy_from_slice(&key)),
        value: Some(value.freeze()),
        headers: Default::default(),
    };
    let mut buf = bytes::BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        [&record],
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .map_err(|_| AppendError::InvalidBatch("a transaction marker could not be encoded"))?;
    Ok(buf.freeze())
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
        encode(&records, compression)
    }

    /// One batch of `records`, compressed with `compression`.
    pub fn encode(records: &[Record], compression: Compression) -> Bytes {
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            records,
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
    use kafka_protocol::records::Compression;

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
    fn header_fields_are_read_where_kafka_puts_them() {
        let mut b = batch_with(3, 4, &[50, 70, 60], Compression::Gzip, Some((9, 2, 40))).to_vec();
        patch_offsets(&mut b, 1_000, 5);
        let h = RecordBatchHeader::parse(&b).unwrap();
        assert_eq!(h.base_offset, 1_000);
        assert_eq!(h.batch_bytes(), Some(b.len()));
        assert_eq!(h.partition_leader_epoch, 5);
        assert_eq!(h.magic, 2);
        assert_eq!(h.crc, crc32c::crc32c(&b[CRC_START..]));
        assert_eq!(h.codec(), Compression::Gzip as i16);
        assert!(!h.is_control() && !h.is_transactional() && !h.is_log_append_time());
        assert_eq!((h.last_offset_delta, h.last_offset()), (2, 1_002));
        assert_eq!((h.base_timestamp, h.max_timestamp), (50, 70));
        assert_eq!((h.producer_id, h.producer_epoch), (9, 2));
        assert_eq!((h.base_sequence, h.last_sequence()), (40, 42));
        assert_eq!(h.record_count, 3);
        assert_eq!(RecordBatchHeader::parse(&b[..BATCH_HEADER_BYTES - 1]), None);
    }

    #[test]
    fn batches_stop_with_an_error_at_a_batch_they_cannot_frame() {
        let mut p = batch(2, 5).to_vec();
        let first = p.len();
        p.extend_from_slice(&batch(1, 5));
        let whole: Vec<usize> = batches(&p).map(|b| b.unwrap().1.len()).collect();
        assert_eq!(whole, vec![first, p.len() - first]);
        let cut = &p[..p.len() - 1];
        let walked: Vec<_> = batches(cut).collect();
        assert_eq!(walked.len(), 2);
        assert_eq!(
            walked[1],
            Err(BatchFramingError::Length {
                at: first,
                batch_length: (p.len() - first - 12) as i32
            })
        );
        let short = &p[..first + 10];
        assert_eq!(
            batches(short).nth(1),
            Some(Err(BatchFramingError::ShortHeader {
                at: first,
                left: 10
            }))
        );
        assert_eq!(batches(&[]).count(), 0);
    }

    #[test]
    fn a_compressed_batch_too_large_to_inflate_is_looked_up_as_a_whole() {
        let mut b = batch_with(4, 8, &[10, 30, 20, 40], Compression::Gzip, None).to_vec();
        patch_offsets(&mut b, 100, 0);
        let b = Bytes::from(b);
        let bound = 4;
        let section = &b[BATCH_HEADER_BYTES..];
        assert!(matches!(
            decompress_records(Compression::Gzip as i16, section, bound),
            Err(DecompressError::TooLarge { .. })
        ));
        // Within the bound the record is found; past it, the batch's first
        // offset at or after the one asked, with the batch's max timestamp.
        assert_eq!(find_record_within(&b, 0, 15, 1 << 20), Some((101, 30)));
        assert_eq!(find_record_within(&b, 0, 15, bound), Some((100, 40)));
        assert_eq!(find_record_within(&b, 102, 15, bound), Some((102, 40)));
        assert_eq!(find_record_within(&b, 0, 41, bound), None);
        assert_eq!(find_record_within(&b, 104, 0, bound), None);
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
                let attrs = (be_i16(v, 21).unwrap() & !RecordBatchHeader::COMPRESSION_MASK) | codec;
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
            let attrs = be_i16(v, 21).unwrap() | RecordBatchHeader::CONTROL;
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
