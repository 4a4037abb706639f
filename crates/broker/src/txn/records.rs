//! The record format of `__transaction_state`: one record per transactional
//! id, keyed by it, holding the transaction's producer id and epoch, its
//! state, timeout and partitions. Compaction keeps the newest; a record
//! without a value (a tombstone) forgets an expired id. `docs/format.md`
//! ("Transaction state topic") draws every byte; change both together.

use std::collections::BTreeSet;

use bytes::{BufMut, Bytes, BytesMut};

use crate::group::records::{Reader, RecordError, put_count, put_str};

/// The internal topic holding transaction state.
pub(crate) const TXN_TOPIC: &str = "__transaction_state";
/// The only key version written so far.
const KEY_VERSION: i16 = 0;
/// The value version of a state with no producer id pending.
const VALUE_VERSION: i16 = 0;
/// The value version that adds the producer id an epoch-bumping end
/// moves to ([`TxnValue::next_producer_id`]). Written only when one is
/// pending, so a build that reads version 0 alone reads every other state.
const VALUE_VERSION_NEXT_ID: i16 = 1;

/// A transaction's state, with Kafka's ids (`TransactionState`), which
/// DescribeTransactions and ListTransactions name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum TxnStatus {
    /// No transaction open.
    Empty,
    /// Partitions were added: records may be written.
    Ongoing,
    /// EndTxn asked to commit: markers are being written.
    PrepareCommit,
    /// EndTxn asked to abort (or the coordinator aborts): markers are being written.
    PrepareAbort,
    /// Every COMMIT marker is written.
    CompleteCommit,
    /// Every ABORT marker is written.
    CompleteAbort,
    /// The id expired and is being removed.
    Dead,
    /// The coordinator fences the producer (a newer one took the id over,
    /// or the transaction timed out) and aborts its transaction.
    PrepareEpochFence,
}

impl TxnStatus {
    fn id(self) -> i8 {
        match self {
            TxnStatus::Empty => 0,
            TxnStatus::Ongoing => 1,
            TxnStatus::PrepareCommit => 2,
            TxnStatus::PrepareAbort => 3,
            TxnStatus::CompleteCommit => 4,
            TxnStatus::CompleteAbort => 5,
            TxnStatus::Dead => 6,
            TxnStatus::PrepareEpochFence => 7,
        }
    }

    fn from_id(id: i8) -> Option<Self> {
        Some(match id {
            0 => TxnStatus::Empty,
            1 => TxnStatus::Ongoing,
            2 => TxnStatus::PrepareCommit,
            3 => TxnStatus::PrepareAbort,
            4 => TxnStatus::CompleteCommit,
            5 => TxnStatus::CompleteAbort,
            6 => TxnStatus::Dead,
            7 => TxnStatus::PrepareEpochFence,
            _ => return None,
        })
    }

    /// Kafka's name of the state, as the admin APIs and `weir txn` show it.
    pub(crate) fn name(self) -> &'static str {
        match self {
            TxnStatus::Empty => "Empty",
            TxnStatus::Ongoing => "Ongoing",
            TxnStatus::PrepareCommit => "PrepareCommit",
            TxnStatus::PrepareAbort => "PrepareAbort",
            TxnStatus::CompleteCommit => "CompleteCommit",
            TxnStatus::CompleteAbort => "CompleteAbort",
            TxnStatus::Dead => "Dead",
            TxnStatus::PrepareEpochFence => "PrepareEpochFence",
        }
    }
}

/// A transactional id's state as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TxnValue {
    pub producer_id: i64,
    /// The producer id before the last one handed out (an exhausted epoch
    /// moves to a new id), so a retried InitProducerId is recognised; -1 when none.
    pub last_producer_id: i64,
    pub producer_epoch: i16,
    /// The epoch before the last bump, for the same reason; -1 when none.
    pub last_producer_epoch: i16,
    pub timeout_ms: i32,
    pub status: TxnStatus,
    /// The partitions in the transaction, as (topic, partition).
    pub partitions: BTreeSet<(String, i32)>,
    /// When the transaction began (its first partition was added); -1 when none is open.
    pub start_ms: i64,
    /// When this state was written.
    pub update_ms: i64,
    /// The producer id the transaction moves to once it completes: set by an
    /// end of transaction version 2 whose bumped epoch is the last one of
    /// its producer id (KIP-890: the markers carry that epoch, and the
    /// producer goes on with the new id at epoch 0); -1 when none.
    pub next_producer_id: i64,
}

/// The key of `transactional_id`'s records.
pub(crate) fn encode_key(transactional_id: &str) -> Bytes {
    let mut out = BytesMut::new();
    out.put_i16(KEY_VERSION);
    put_str(&mut out, transactional_id);
    out.freeze()
}

impl TxnValue {
    pub(crate) fn encode(&self) -> Bytes {
        let mut out = BytesMut::new();
        out.put_i16(if self.next_producer_id < 0 {
            VALUE_VERSION
        } else {
            VALUE_VERSION_NEXT_ID
        });
        out.put_i64(self.producer_id);
        out.put_i64(self.last_producer_id);
        out.put_i16(self.producer_epoch);
        out.put_i16(self.last_producer_epoch);
        out.put_i32(self.timeout_ms);
        out.put_i8(self.status.id());
        out.put_i64(self.start_ms);
        out.put_i64(self.update_ms);
        let mut topics: Vec<(&str, Vec<i32>)> = Vec::new();
        for (topic, partition) in &self.partitions {
            match topics.last_mut() {
                Some((t, ps)) if *t == topic.as_str() => ps.push(*partition),
                _ => topics.push((topic, vec![*partition])),
            }
        }
        put_count(&mut out, topics.len());
        for (topic, partitions) in topics {
            put_str(&mut out, topic);
            put_count(&mut out, partitions.len());
            for p in partitions {
                out.put_i32(p);
            }
        }
        if self.next_producer_id >= 0 {
            out.put_i64(self.next_producer_id);
        }
        out.freeze()
    }

    fn decode(r: &mut Reader<'_>, version: i16) -> Result<Self, RecordError> {
        let producer_id = r.i64()?;
        let last_producer_id = r.i64()?;
        let producer_epoch = r.i16()?;
        let last_producer_epoch = r.i16()?;
        let timeout_ms = r.i32()?;
        let status = TxnStatus::from_id(r.i8()?).ok_or(RecordError::Malformed)?;
        let start_ms = r.i64()?;
        let update_ms = r.i64()?;
        let mut partitions = BTreeSet::new();
        for _ in 0..r.count(6)? {
            let topic = r.str()?;
            for _ in 0..r.count(4)? {
                partitions.insert((topic.clone(), r.i32()?));
            }
        }
        let next_producer_id = if version >= VALUE_VERSION_NEXT_ID {
            r.i64()?
        } else {
            -1
        };
        Ok(Self {
            producer_id,
            last_producer_id,
            producer_epoch,
            last_producer_epoch,
            timeout_ms,
            status,
            partitions,
            start_ms,
            update_ms,
            next_producer_id,
        })
    }
}

/// Decode one record of `__transaction_state`: the transactional id and,
/// unless it is a tombstone, its state.
pub(crate) fn decode(
    key: &[u8],
    value: Option<&[u8]>,
) -> Result<(String, Option<TxnValue>), RecordError> {
    let mut k = Reader { buf: key };
    let version = k.i16()?;
    if version != KEY_VERSION {
        return Err(RecordError::UnknownKeyType(version));
    }
    let id = k.str()?;
    let Some(value) = value else {
        return Ok((id, None));
    };
    let mut v = Reader { buf: value };
    let version = v.i16()?;
    if !(VALUE_VERSION..=VALUE_VERSION_NEXT_ID).contains(&version) {
        return Err(RecordError::UnknownVersion(version));
    }
    Ok((id, Some(TxnValue::decode(&mut v, version)?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_reads_back_as_written_and_a_tombstone_as_none() {
        let value = TxnValue {
            producer_id: 42,
            last_producer_id: -1,
            producer_epoch: 3,
            last_producer_epoch: 2,
            timeout_ms: 60_000,
            status: TxnStatus::Ongoing,
            partitions: [
                ("a".to_string(), 0),
                ("a".to_string(), 2),
                ("b".to_string(), 1),
            ]
            .into_iter()
            .collect(),
            start_ms: 1_000,
            update_ms: 2_000,
            next_producer_id: -1,
        };
        let key = encode_key("tx-1");
        assert_eq!(
            decode(&key, Some(&value.encode())).unwrap(),
            ("tx-1".to_string(), Some(value.clone()))
        );
        assert_eq!(value.encode()[..2], [0, 0], "version 0 without a next id");
        let moving = TxnValue {
            next_producer_id: 43,
            ..value.clone()
        };
        assert_eq!(moving.encode()[..2], [0, 1]);
        assert_eq!(
            decode(&key, Some(&moving.encode())).unwrap(),
            ("tx-1".to_string(), Some(moving))
        );
        assert_eq!(decode(&key, None).unwrap(), ("tx-1".to_string(), None));
        let mut newer = value.encode().to_vec();
        newer[1] = 9;
        assert_eq!(
            decode(&key, Some(&newer)).unwrap_err(),
            RecordError::UnknownVersion(9)
        );
        let cut = value.encode();
        assert!(decode(&key, Some(&cut[..cut.len() - 1])).is_err());
    }
}
