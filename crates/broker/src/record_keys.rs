//! Read-only scan of the record keys in a produce payload, for the rule that
//! a compacted topic refuses records without a key (Kafka's LogValidator).
//!
//! The payload is never decoded into owned records nor re-encoded: the scan
//! walks each record's framing in place with weir-storage's batch and record
//! readers. A compressed batch is decompressed first within
//! [`SCAN_DECOMPRESSED_BYTES_MAX`], so a small batch that inflates without
//! bound cannot exhaust memory. Framing the scan cannot follow ends the scan
//! of that batch; the log validates every batch header before appending.

use weir_storage::{
    DecompressError, RecordBatchHeader, batches, decompress_records, record_frames,
};

/// The most bytes one batch's records may decompress to for the scan. Kafka
/// has no such bound; a batch past it is refused (INVALID_RECORD) rather
/// than inflated without limit.
pub(crate) const SCAN_DECOMPRESSED_BYTES_MAX: usize = 64 << 20;

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

impl From<DecompressError> for ScanError {
    fn from(e: DecompressError) -> Self {
        match e {
            DecompressError::TooLarge { .. } => Self::TooLarge,
            DecompressError::Corrupt { codec } => Self::Corrupt(codec),
        }
    }
}

/// The positions (counting records from 0 across the payload's batches) of
/// the records whose key is null. Framing the scan cannot follow ends the
/// scan of that batch: the log refuses such a batch anyway.
pub(crate) fn null_key_positions(payload: &[u8]) -> Result<Vec<i32>, ScanError> {
    let mut positions = Vec::new();
    let mut index: i32 = 0;
    for (header, batch) in batches(payload).map_while(Result::ok) {
        let count = header.record_count.max(0);
        if !header.is_control() {
            let section = batch.get(RecordBatchHeader::BYTES..).unwrap_or_default();
            let records = decompress_records(header.codec(), section, SCAN_DECOMPRESSED_BYTES_MAX)?;
            let null_keys = record_frames(&records, count)
                .map_while(Result::ok)
                .enumerate()
                .filter(|(_, frame)| frame.key.is_none());
            for (i, _) in null_keys {
                let i = i32::try_from(i).unwrap_or(i32::MAX);
                positions.push(index.saturating_add(i));
            }
        }
        index = index.saturating_add(count);
    }
    Ok(positions)
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
        // Zeros compress about a thousandfold: a batch of a few hundred KiB
        // that decompresses past the bound.
        let huge = "0".repeat(SCAN_DECOMPRESSED_BYTES_MAX + 1);
        let payload = batch(&[Some(huge.as_str())], Compression::Zstd);
        assert!(payload.len() < 1 << 20, "the bomb is small");
        assert_eq!(null_key_positions(&payload), Err(ScanError::TooLarge));
    }

    #[test]
    fn malformed_payloads_never_panic() {
        let good = batch(&[None, Some("k")], Compression::None);
        for cut in 0..good.len() {
            let _ = null_key_positions(&good[..cut]);
        }
        let mut garbage = good.to_vec();
        for byte in garbage.iter_mut().skip(RecordBatchHeader::BYTES) {
            *byte = 0xff;
        }
        let _ = null_key_positions(&garbage);
        let mut codec = good.to_vec();
        codec[RecordBatchHeader::ATTRIBUTES_AT + 1] |= 0x03;
        assert!(null_key_positions(&codec).is_err());
    }
}
