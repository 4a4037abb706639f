//! Share-partition state on disk: the internal compacted topic
//! `__share_group_state`, one record per change of a share-partition's
//! durable state, keyed by group, topic id and partition, so compaction
//! keeps the newest. `docs/format.md` ("Share group state topic") draws
//! every byte; change both together.
//!
//! Each record is a whole snapshot (start offset and state runs): the state
//! of a share-partition is bounded by `group.share.partition.max.record.locks`
//! slots, and a run covers many of them, so a snapshot stays small and a
//! load needs only the newest record of each key.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};

use super::manager::SharePartitionKey;
use super::partition::{ArchiveReason, PersistedPartition, PersistedState, StateBatch};
use crate::group::records::{Reader, RecordError, partition_for, put_count, put_str};

/// The internal topic holding share-partition state.
pub(crate) const STATE_TOPIC: &str = "__share_group_state";
/// Key type of a share-partition's snapshot: (group, topic id, partition).
const KEY_TYPE_SNAPSHOT: i16 = 0;
/// The value version written: 1 adds, to each dead-lettering run, the
/// time its records were archived. Version 0 is still read.
const VALUE_VERSION: i16 = 1;

/// A state run's state byte.
const STATE_AVAILABLE: i8 = 0;
const STATE_ACKNOWLEDGED: i8 = 2;
const STATE_ARCHIVED: i8 = 4;
/// Archived, its dead letter (for a rejection) not yet confirmed.
const STATE_DEAD_LETTERING_REJECTED: i8 = 5;
/// Archived, its dead letter (for the delivery limit) not yet confirmed.
const STATE_DEAD_LETTERING_LIMIT: i8 = 6;

/// The partition of `__share_group_state` holding `key`'s state, as Kafka's
/// share coordinator places it: by the hash of "group:topic id:partition".
pub(crate) fn state_partition(key: &SharePartitionKey, partitions: i32) -> i32 {
    partition_for(
        &format!("{}:{}:{}", key.group, key.topic_id, key.partition),
        partitions,
    )
}

/// The record key of `key`'s snapshots.
pub(crate) fn encode_key(key: &SharePartitionKey) -> Bytes {
    let mut out = BytesMut::new();
    out.put_i16(KEY_TYPE_SNAPSHOT);
    put_str(&mut out, &key.group);
    out.put_slice(key.topic_id.as_bytes());
    out.put_i32(key.partition);
    out.freeze()
}

/// The record value of a snapshot.
pub(crate) fn encode_value(p: &PersistedPartition) -> Bytes {
    let mut out = BytesMut::new();
    out.put_i16(VALUE_VERSION);
    out.put_i64(p.start_offset);
    put_count(&mut out, p.batches.len());
    for b in &p.batches {
        out.put_i64(b.first_offset);
        out.put_i64(b.last_offset);
        let since = match b.state {
            PersistedState::Available => {
                out.put_i8(STATE_AVAILABLE);
                None
            }
            PersistedState::Acknowledged => {
                out.put_i8(STATE_ACKNOWLEDGED);
                None
            }
            PersistedState::Archived => {
                out.put_i8(STATE_ARCHIVED);
                None
            }
            PersistedState::DeadLettering { reason, since_ms } => {
                out.put_i8(match reason {
                    ArchiveReason::Rejected => STATE_DEAD_LETTERING_REJECTED,
                    ArchiveReason::DeliveryLimit => STATE_DEAD_LETTERING_LIMIT,
                });
                Some(since_ms)
            }
        };
        out.put_u16(b.delivery_count);
        if let Some(since_ms) = since {
            out.put_i64(since_ms);
        }
    }
    out.freeze()
}

/// Decode one record of `__share_group_state`: its key and, unless it is a
/// tombstone, the snapshot.
pub(crate) fn decode(
    key: &[u8],
    value: Option<&[u8]>,
) -> Result<(SharePartitionKey, Option<PersistedPartition>), RecordError> {
    let mut k = Reader { buf: key };
    let kind = k.i16()?;
    if kind != KEY_TYPE_SNAPSHOT {
        return Err(RecordError::UnknownKeyType(kind));
    }
    let spk = SharePartitionKey {
        group: Arc::from(k.str()?.as_str()),
        topic_id: k.uuid()?,
        partition: k.i32()?,
    };
    let Some(value) = value else {
        return Ok((spk, None));
    };
    let mut v = Reader { buf: value };
    let version = v.i16()?;
    if !(0..=VALUE_VERSION).contains(&version) {
        return Err(RecordError::UnknownVersion(version));
    }
    let start_offset = v.i64()?;
    let count = v.count(19)?;
    let mut batches = Vec::with_capacity(count);
    for _ in 0..count {
        let first_offset = v.i64()?;
        let last_offset = v.i64()?;
        let state = v.i8()?;
        let delivery_count = u16::from_be_bytes(v.array()?);
        let mut dead_lettering = |reason| -> Result<PersistedState, RecordError> {
            // Version 0 kept no time: a look-up for the dead letter then
            // starts at the dead-letter partition's log start.
            let since_ms = if version >= 1 { v.i64()? } else { i64::MIN };
            Ok(PersistedState::DeadLettering { reason, since_ms })
        };
        let state = match state {
            STATE_AVAILABLE => PersistedState::Available,
            STATE_ACKNOWLEDGED => PersistedState::Acknowledged,
            STATE_ARCHIVED => PersistedState::Archived,
            STATE_DEAD_LETTERING_REJECTED => dead_lettering(ArchiveReason::Rejected)?,
            STATE_DEAD_LETTERING_LIMIT => dead_lettering(ArchiveReason::DeliveryLimit)?,
            _ => return Err(RecordError::Malformed),
        };
        if last_offset < first_offset || first_offset < start_offset {
            return Err(RecordError::Malformed);
        }
        batches.push(StateBatch {
            first_offset,
            last_offset,
            state,
            delivery_count,
        });
    }
    Ok((
        spk,
        Some(PersistedPartition {
            start_offset,
            batches,
        }),
    ))
}

/// The newest snapshot of every share-partition in one partition's records,
/// applied in offset order (`replay` feeds it).
pub(crate) type Loaded = HashMap<SharePartitionKey, PersistedPartition>;

/// Apply one decoded record to what a load has found so far.
pub(crate) fn apply(
    loaded: &mut Loaded,
    key: SharePartitionKey,
    value: Option<PersistedPartition>,
) {
    match value {
        Some(v) => {
            loaded.insert(key, v);
        }
        None => {
            loaded.remove(&key);
        }
    }
}

/// Bytes read per step when loading a partition.
const LOAD_READ_BYTES: usize = 4 * 1024 * 1024;

/// Read one partition of `__share_group_state` from its log start to its
/// log end into `loaded`. Only Weir writes there (clients may not produce
/// to internal topics), so a record that cannot be decoded is a newer
/// Weir's or damage: the load stops, and the broker with it, rather than
/// drop a share group's progress.
pub(crate) fn load_partition(
    index: i32,
    partition: &weir_storage::Partition,
    loaded: &mut Loaded,
) -> Result<(), String> {
    let end = partition.offsets().log_end;
    let mut next = partition.offsets().log_start;
    while next < end {
        let read = partition
            .read_replica(next, LOAD_READ_BYTES)
            .map_err(|e| format!("cannot read {STATE_TOPIC}-{index}: {e}"))?;
        let before = next;
        for framed in weir_storage::batches(&read.records) {
            let (header, batch) =
                framed.map_err(|e| format!("{STATE_TOPIC}-{index} at offset {next}: {e}"))?;
            next = next.max(header.last_offset().saturating_add(1));
            if header.is_control() {
                continue;
            }
            let mut bytes = read.records.slice_ref(batch);
            let records = kafka_protocol::records::RecordBatchDecoder::decode(&mut bytes)
                .map_err(|e| unreadable(index, header.base_offset, &e.to_string()))?
                .records;
            for record in records {
                let Some(key) = record.key.as_deref() else {
                    return Err(unreadable(index, record.offset, "a record without a key"));
                };
                let (key, value) = decode(key, record.value.as_deref())
                    .map_err(|e| unreadable(index, record.offset, &e.to_string()))?;
                apply(loaded, key, value);
            }
        }
        if next <= before {
            return Err(format!(
                "{STATE_TOPIC}-{index} at offset {next}: reading made no progress"
            ));
        }
    }
    Ok(())
}

fn unreadable(partition: i32, offset: i64, reason: &str) -> String {
    format!(
        "{STATE_TOPIC}-{partition} at offset {offset} holds share-partition state this \
         build cannot read ({reason}): it was written by a newer Weir, or is damaged. Start \
         the Weir that wrote it; this one will not drop a share group's progress"
    )
}

#[cfg(test)]
mod tests {
    // Test code: a failed step should panic and fail the test.
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use uuid::Uuid;

    #[test]
    fn snapshots_round_trip_and_every_truncation_is_refused() {
        let key = SharePartitionKey {
            group: Arc::from("workers"),
            topic_id: Uuid::from_u128(9),
            partition: 3,
        };
        let value = PersistedPartition {
            start_offset: 10,
            batches: vec![
                StateBatch {
                    first_offset: 10,
                    last_offset: 12,
                    state: PersistedState::Available,
                    delivery_count: 2,
                },
                StateBatch {
                    first_offset: 13,
                    last_offset: 13,
                    state: PersistedState::DeadLettering {
                        reason: ArchiveReason::DeliveryLimit,
                        since_ms: 1_700_000_000_000,
                    },
                    delivery_count: 5,
                },
                StateBatch {
                    first_offset: 14,
                    last_offset: 20,
                    state: PersistedState::Acknowledged,
                    delivery_count: 1,
                },
            ],
        };
        let (k, v) = (encode_key(&key), encode_value(&value));
        assert_eq!(decode(&k, Some(&v)).unwrap(), (key.clone(), Some(value)));
        assert_eq!(decode(&k, None).unwrap(), (key, None));
        for cut in 0..v.len() {
            assert!(decode(&k, Some(&v[..cut])).is_err(), "cut at {cut}");
        }
        for cut in 0..k.len() {
            assert!(decode(&k[..cut], None).is_err(), "key cut at {cut}");
        }
        let mut future = BytesMut::new();
        future.put_i16(2);
        assert_eq!(
            decode(&k, Some(&future)),
            Err(RecordError::UnknownVersion(2))
        );
        // Version 0 (no time on dead-lettering runs) is still read.
        let mut v0 = BytesMut::new();
        v0.put_i16(0);
        v0.put_i64(10);
        put_count(&mut v0, 1);
        v0.put_i64(13);
        v0.put_i64(13);
        v0.put_i8(STATE_DEAD_LETTERING_REJECTED);
        v0.put_u16(2);
        let (_, old) = decode(&k, Some(&v0)).unwrap();
        assert_eq!(
            old.unwrap().batches[0].state,
            PersistedState::DeadLettering {
                reason: ArchiveReason::Rejected,
                since_ms: i64::MIN
            }
        );
    }

    #[test]
    fn a_share_partition_always_lands_in_the_same_state_partition() {
        let key = |p| SharePartitionKey {
            group: Arc::from("g"),
            topic_id: Uuid::from_u128(1),
            partition: p,
        };
        let spread: std::collections::BTreeSet<i32> =
            (0..50).map(|p| state_partition(&key(p), 50)).collect();
        assert!(spread.len() > 10, "{spread:?}");
        assert_eq!(state_partition(&key(7), 50), state_partition(&key(7), 50));
        assert!((0..50).contains(&state_partition(&key(7), 50)));
    }
}
