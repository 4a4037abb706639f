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
    partition_for(&coordinator_key(key), partitions)
}

/// What places `key` in `__share_group_state`: "group:topic id:partition".
pub(crate) fn coordinator_key(key: &SharePartitionKey) -> String {
    format!("{}:{}:{}", key.group, key.topic_id, key.partition)
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
        let (code, since) = state_code(b.state);
        out.put_i8(code);
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
        // Version 0 kept no time: a look-up for the dead letter then
        // starts at the dead-letter partition's log start.
        let since_ms = if version >= 1 && dead_lettering(state) {
            v.i64()?
        } else {
            i64::MIN
        };
        let state = state_of(state, since_ms)?;
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

/// A run's state byte, and for a dead-lettering run the time it was
/// archived (written after the delivery count).
fn state_code(state: PersistedState) -> (i8, Option<i64>) {
    match state {
        PersistedState::Available => (STATE_AVAILABLE, None),
        PersistedState::Acknowledged => (STATE_ACKNOWLEDGED, None),
        PersistedState::Archived => (STATE_ARCHIVED, None),
        PersistedState::DeadLettering { reason, since_ms } => (
            match reason {
                ArchiveReason::Rejected => STATE_DEAD_LETTERING_REJECTED,
                ArchiveReason::DeliveryLimit => STATE_DEAD_LETTERING_LIMIT,
            },
            Some(since_ms),
        ),
    }
}

/// Whether state byte `code` is a dead-lettering one (it carries a time).
fn dead_lettering(code: i8) -> bool {
    matches!(
        code,
        STATE_DEAD_LETTERING_REJECTED | STATE_DEAD_LETTERING_LIMIT
    )
}

/// The state of state byte `code` (`since_ms` for a dead-lettering one).
fn state_of(code: i8, since_ms: i64) -> Result<PersistedState, RecordError> {
    Ok(match code {
        STATE_AVAILABLE => PersistedState::Available,
        STATE_ACKNOWLEDGED => PersistedState::Acknowledged,
        STATE_ARCHIVED => PersistedState::Archived,
        STATE_DEAD_LETTERING_REJECTED => PersistedState::DeadLettering {
            reason: ArchiveReason::Rejected,
            since_ms,
        },
        STATE_DEAD_LETTERING_LIMIT => PersistedState::DeadLettering {
            reason: ArchiveReason::DeliveryLimit,
            since_ms,
        },
        _ => return Err(RecordError::Malformed),
    })
}

/// A run as Kafka's share-state RPCs (ReadShareGroupState,
/// WriteShareGroupState) carry it between brokers: first and last offset,
/// Kafka's delivery state (0 available, 2 acknowledged, 4 archived; Weir's
/// dead-lettering states 5 and 6 as on disk), the delivery count, and for
/// a dead-lettering run the time it was archived, which Weir sends in the
/// batch's tagged field [`SINCE_TAG`].
pub(crate) struct WireBatch {
    pub first_offset: i64,
    pub last_offset: i64,
    pub delivery_state: i8,
    pub delivery_count: i16,
    pub since_ms: Option<i64>,
}

/// The tagged field of a state batch that carries a dead-lettering run's
/// archive time (8 bytes, big-endian), between Weir brokers only.
pub(crate) const SINCE_TAG: i32 = 0x5745;

impl WireBatch {
    pub(crate) fn of(b: &StateBatch) -> Self {
        let (delivery_state, since_ms) = state_code(b.state);
        Self {
            first_offset: b.first_offset,
            last_offset: b.last_offset,
            delivery_state,
            delivery_count: i16::try_from(b.delivery_count).unwrap_or(i16::MAX),
            since_ms,
        }
    }

    /// The tagged fields to send with this batch.
    pub(crate) fn tags(&self) -> std::collections::BTreeMap<i32, Bytes> {
        self.since_ms
            .map(|ms| (SINCE_TAG, Bytes::copy_from_slice(&ms.to_be_bytes())))
            .into_iter()
            .collect()
    }

    /// The batch a peer sent, with its tagged fields, checked as a load
    /// checks one.
    pub(crate) fn read(
        first_offset: i64,
        last_offset: i64,
        (delivery_state, delivery_count): (i8, i16),
        tags: &std::collections::BTreeMap<i32, Bytes>,
    ) -> Result<StateBatch, RecordError> {
        let since_ms = match tags.get(&SINCE_TAG) {
            Some(b) => {
                i64::from_be_bytes(b.as_ref().try_into().map_err(|_| RecordError::Malformed)?)
            }
            None if dead_lettering(delivery_state) => i64::MIN,
            None => 0,
        };
        if last_offset < first_offset {
            return Err(RecordError::Malformed);
        }
        Ok(StateBatch {
            first_offset,
            last_offset,
            state: state_of(delivery_state, since_ms)?,
            delivery_count: u16::try_from(delivery_count).map_err(|_| RecordError::Malformed)?,
        })
    }
}

/// The runs of a snapshot as a share-state RPC's state batches of type
/// `$batch` (each RPC has its own generated type with the same fields).
macro_rules! wire_batches {
    ($batch:ty, $runs:expr) => {
        $runs
            .iter()
            .map(|run| {
                let w = $crate::share::state::WireBatch::of(run);
                let mut batch = <$batch>::default()
                    .with_first_offset(w.first_offset)
                    .with_last_offset(w.last_offset)
                    .with_delivery_state(w.delivery_state)
                    .with_delivery_count(w.delivery_count);
                batch.unknown_tagged_fields = w.tags();
                batch
            })
            .collect()
    };
}
pub(crate) use wire_batches;

/// The runs a share-state RPC's state batches carry, each checked.
macro_rules! runs_of {
    ($batches:expr) => {
        $batches.iter().map(|b| {
            $crate::share::state::WireBatch::read(
                b.first_offset,
                b.last_offset,
                (b.delivery_state, b.delivery_count),
                &b.unknown_tagged_fields,
            )
        })
    };
}
pub(crate) use runs_of;

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
    fn runs_cross_between_brokers_whole_and_a_bad_archive_time_is_refused() {
        let runs = [
            StateBatch {
                first_offset: 4,
                last_offset: 9,
                state: PersistedState::Available,
                delivery_count: 3,
            },
            StateBatch {
                first_offset: 10,
                last_offset: 10,
                state: PersistedState::DeadLettering {
                    reason: ArchiveReason::Rejected,
                    since_ms: 1_700_000_000_123,
                },
                delivery_count: 1,
            },
        ];
        for run in runs {
            let w = WireBatch::of(&run);
            let tags = w.tags();
            let back = WireBatch::read(
                w.first_offset,
                w.last_offset,
                (w.delivery_state, w.delivery_count),
                &tags,
            )
            .unwrap();
            assert_eq!(back, run);
        }
        let bad = std::collections::BTreeMap::from([(SINCE_TAG, Bytes::from_static(b"abc"))]);
        assert!(WireBatch::read(10, 10, (STATE_DEAD_LETTERING_REJECTED, 1), &bad).is_err());
        let none = std::collections::BTreeMap::new();
        assert!(WireBatch::read(10, 10, (9, 1), &none).is_err());
        assert!(WireBatch::read(10, 9, (STATE_AVAILABLE, 1), &none).is_err());
        assert!(WireBatch::read(10, 10, (STATE_AVAILABLE, -1), &none).is_err());
    }

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
