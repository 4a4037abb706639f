//! Producer state of one partition: per producer id, the current epoch and
//! the last five batches, to spot retried duplicates and sequence gaps; and
//! the producer's open transaction (where it began in this partition), from
//! which the partition's last stable offset follows.
//!
//! A producer id the partition does not know starts its history at
//! sequence 0 while the partition's history is complete (it has seen every
//! batch written to it and forgotten no producer). Once it may have
//! forgotten one (a producer table full, or a restart that rebuilt the
//! state from a log whose start has moved or from only its newest batches)
//! an unknown producer is accepted at any sequence, as Kafka does after a
//! producer's state has expired. Refusing a later sequence while nothing
//! was forgotten is what keeps a failover from losing records: a new leader
//! that never saw a producer's first batches (they were only on the old
//! leader) answers OUT_OF_ORDER_SEQUENCE_NUMBER to the next ones, and the
//! client retries the lost ones, instead of acknowledging past them.

use std::collections::{BTreeSet, HashMap, VecDeque};

use crate::error::AppendError;

/// Batches remembered per producer (Kafka's `max.in.flight.requests.per.connection` bound).
pub(crate) const PRODUCER_BATCHES_REMEMBERED: usize = 5;
/// Producer ids remembered per partition; the least recently active is forgotten beyond it.
pub(crate) const PRODUCERS_PER_PARTITION_MAX: usize = 10_000;

/// One remembered batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SequencedBatch {
    pub first_seq: i32,
    pub last_seq: i32,
    pub base_offset: i64,
    pub last_offset: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProducerState {
    epoch: i16,
    batches: VecDeque<SequencedBatch>,
    /// Epoch of the transaction coordinator that wrote this producer's last
    /// marker here; -1 before any.
    coordinator_epoch: i32,
    /// First offset of the producer's open transaction in this partition.
    txn_first_offset: Option<i64>,
    /// The largest max timestamp of its batches (DescribeProducers).
    last_timestamp: i64,
}

impl Default for ProducerState {
    fn default() -> Self {
        Self {
            epoch: 0,
            batches: VecDeque::new(),
            coordinator_epoch: -1,
            txn_first_offset: None,
            last_timestamp: -1,
        }
    }
}

/// A transaction marker's meaning (the control record's type and the
/// coordinator epoch in its value).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxnMarker {
    /// COMMIT (true) or ABORT.
    pub commit: bool,
    /// The epoch of the coordinator that wrote it.
    pub coordinator_epoch: i32,
}

/// What one producer's state says, for DescribeProducers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerSummary {
    /// The producer id.
    pub producer_id: i64,
    /// Its current epoch.
    pub producer_epoch: i16,
    /// The sequence of its last record here; -1 when none is remembered.
    pub last_sequence: i32,
    /// The largest timestamp of its batches; -1 when unknown.
    pub last_timestamp: i64,
    /// The coordinator epoch of its last marker; -1 before any.
    pub coordinator_epoch: i32,
    /// Where its open transaction began here, if one is open.
    pub txn_start_offset: Option<i64>,
}

/// Outcome of checking one batch against the producer's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SequenceCheck {
    /// Append it.
    Accept,
    /// A retry of a batch already stored.
    Duplicate(SequencedBatch),
}

impl ProducerState {
    /// Check a batch of `(epoch, first_seq, last_seq)` from `producer_id`.
    /// `history_complete`: the partition has forgotten no producer, so
    /// one it does not know has written nothing to it.
    pub fn check(
        state: Option<&ProducerState>,
        history_complete: bool,
        producer_id: i64,
        epoch: i16,
        first_seq: i32,
        last_seq: i32,
    ) -> Result<SequenceCheck, AppendError> {
        let Some(state) = state else {
            if history_complete && first_seq != 0 {
                return Err(AppendError::OutOfOrderSequence {
                    producer_id,
                    expected: 0,
                    got: first_seq,
                });
            }
            return Ok(SequenceCheck::Accept);
        };
        if epoch < state.epoch {
            return Err(AppendError::InvalidProducerEpoch {
                producer_id,
                current: state.epoch,
                got: epoch,
            });
        }
        if epoch > state.epoch {
            if first_seq != 0 {
                return Err(AppendError::OutOfOrderSequence {
                    producer_id,
                    expected: 0,
                    got: first_seq,
                });
            }
            return Ok(SequenceCheck::Accept);
        }
        if let Some(b) = state
            .batches
            .iter()
            .find(|b| b.first_seq == first_seq && b.last_seq == last_seq)
        {
            return Ok(SequenceCheck::Duplicate(*b));
        }
        let Some(last) = state.batches.back() else {
            return Ok(SequenceCheck::Accept);
        };
        let expected = crate::batch::increment_sequence(last.last_seq, 1);
        if first_seq != expected {
            return Err(AppendError::OutOfOrderSequence {
                producer_id,
                expected,
                got: first_seq,
            });
        }
        Ok(SequenceCheck::Accept)
    }

    /// Check a data batch against the producer's transaction: a producer
    /// with a transaction open here may write only transactional batches in
    /// its epoch (Kafka's INVALID_TXN_STATE).
    pub fn check_txn(
        state: Option<&ProducerState>,
        producer_id: i64,
        epoch: i16,
        transactional: bool,
    ) -> Result<(), AppendError> {
        if transactional && producer_id < 0 {
            return Err(AppendError::InvalidTxnState {
                producer_id,
                reason: "a transactional batch must name a producer id",
            });
        }
        match state {
            Some(s) if !transactional && s.txn_first_offset.is_some() && epoch == s.epoch => {
                Err(AppendError::InvalidTxnState {
                    producer_id,
                    reason: "a batch that is not transactional, from a producer with a transaction open",
                })
            }
            _ => Ok(()),
        }
    }

    /// Check a transaction marker for `producer_id` at `epoch`, written by
    /// the coordinator of `coordinator_epoch`.
    pub fn check_marker(
        state: Option<&ProducerState>,
        producer_id: i64,
        epoch: i16,
        coordinator_epoch: i32,
    ) -> Result<(), AppendError> {
        let Some(state) = state else { return Ok(()) };
        if epoch < state.epoch {
            return Err(AppendError::InvalidProducerEpoch {
                producer_id,
                current: state.epoch,
                got: epoch,
            });
        }
        if coordinator_epoch < state.coordinator_epoch {
            return Err(AppendError::CoordinatorFenced {
                producer_id,
                current: state.coordinator_epoch,
                got: coordinator_epoch,
            });
        }
        Ok(())
    }

    /// Remember an accepted data batch; a transactional one opens the
    /// producer's transaction here if none is open.
    pub fn record(
        &mut self,
        epoch: i16,
        batch: SequencedBatch,
        transactional: bool,
        max_timestamp: i64,
    ) {
        self.set_epoch(epoch);
        self.batches.push_back(batch);
        while self.batches.len() > PRODUCER_BATCHES_REMEMBERED {
            self.batches.pop_front();
        }
        if transactional && self.txn_first_offset.is_none() {
            self.txn_first_offset = Some(batch.base_offset);
        }
        self.last_timestamp = self.last_timestamp.max(max_timestamp);
    }

    /// Remember a batch that carries no sequence (a coordinator's write
    /// for the producer): it only sets the epoch and, transactional, opens
    /// the producer's transaction here if none is open.
    pub fn record_unsequenced(
        &mut self,
        epoch: i16,
        base_offset: i64,
        transactional: bool,
        max_timestamp: i64,
    ) {
        self.set_epoch(epoch);
        if transactional && self.txn_first_offset.is_none() {
            self.txn_first_offset = Some(base_offset);
        }
        self.last_timestamp = self.last_timestamp.max(max_timestamp);
    }

    /// Remember a marker: the open transaction ends. Returns where it began,
    /// `None` when none was open here. `coordinator_epoch` is `None` when
    /// the marker's value is not at hand (a replay from the index alone),
    /// and the one remembered stays.
    pub fn record_marker(&mut self, epoch: i16, coordinator_epoch: Option<i32>) -> Option<i64> {
        // A marker may carry a newer epoch (KIP-890 bumps it at every
        // transaction end): the sequences start again under it.
        self.set_epoch(epoch);
        if let Some(c) = coordinator_epoch {
            self.coordinator_epoch = c;
        }
        self.txn_first_offset.take()
    }

    fn set_epoch(&mut self, epoch: i16) {
        if epoch != self.epoch {
            self.epoch = epoch;
            self.batches.clear();
        }
    }

    fn last_offset(&self) -> i64 {
        self.batches.back().map_or(-1, |b| b.last_offset)
    }

    /// Where the producer's open transaction began here, if one is open.
    pub fn txn_first_offset(&self) -> Option<i64> {
        self.txn_first_offset
    }

    /// The producer's newest epoch here.
    pub fn epoch(&self) -> i16 {
        self.epoch
    }
}

/// Every producer's state in one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProducerTable {
    producers: HashMap<i64, ProducerState>,
    /// No producer has been forgotten (see the module comment).
    complete: bool,
    /// The open transactions: (first offset, producer id).
    open: BTreeSet<(i64, i64)>,
}

impl Default for ProducerTable {
    /// A new partition's: it has forgotten nothing.
    fn default() -> Self {
        Self {
            producers: HashMap::new(),
            complete: true,
            open: BTreeSet::new(),
        }
    }
}

impl ProducerTable {
    /// A table that may have forgotten producers: it accepts an unknown
    /// one at any sequence.
    pub fn incomplete() -> Self {
        Self {
            complete: false,
            ..Self::default()
        }
    }

    /// Whether no producer has been forgotten.
    pub fn complete(&self) -> bool {
        self.complete
    }

    pub fn get(&self, producer_id: i64) -> Option<&ProducerState> {
        self.producers.get(&producer_id)
    }

    /// Store a producer's new state, forgetting the least recently active
    /// producer when the table is full. A producer with a transaction open
    /// is never forgotten (the last stable offset depends on it); open
    /// transactions end by commit, abort or the coordinator's timeout.
    pub fn put(&mut self, producer_id: i64, state: ProducerState) {
        if !self.producers.contains_key(&producer_id)
            && self.producers.len() >= PRODUCERS_PER_PARTITION_MAX
        {
            let oldest = self
                .producers
                .iter()
                .filter(|(_, s)| s.txn_first_offset.is_none())
                .min_by_key(|(_, s)| s.last_offset())
                .map(|(id, _)| *id);
            if let Some(id) = oldest {
                self.producers.remove(&id);
                self.complete = false;
            }
        }
        if let Some(first) = self
            .producers
            .get(&producer_id)
            .and_then(|s| s.txn_first_offset)
        {
            self.open.remove(&(first, producer_id));
        }
        if let Some(first) = state.txn_first_offset {
            self.open.insert((first, producer_id));
        }
        self.producers.insert(producer_id, state);
    }

    /// The first offset of the earliest open transaction.
    pub fn first_open_offset(&self) -> Option<i64> {
        self.open.first().map(|(first, _)| *first)
    }

    /// The open transactions as (first offset, producer id), earliest first.
    pub fn open_transactions(&self) -> impl Iterator<Item = (i64, i64)> + '_ {
        self.open.iter().copied()
    }

    /// How many producers are remembered.
    pub fn len(&self) -> usize {
        self.producers.len()
    }

    /// What each producer's state says, for DescribeProducers.
    pub fn summaries(&self) -> Vec<ProducerSummary> {
        let mut out: Vec<ProducerSummary> = self
            .producers
            .iter()
            .map(|(id, s)| ProducerSummary {
                producer_id: *id,
                producer_epoch: s.epoch,
                last_sequence: s.batches.back().map_or(-1, |b| b.last_seq),
                last_timestamp: s.last_timestamp,
                coordinator_epoch: s.coordinator_epoch,
                txn_start_offset: s.txn_first_offset,
            })
            .collect();
        out.sort_by_key(|p| p.producer_id);
        out
    }
}

/// Magic at the start of a producer-state snapshot file.
pub(crate) const SNAPSHOT_MAGIC: [u8; 8] = *b"WEIRPST\0";
/// Version of the snapshot layout this build writes and reads.
pub(crate) const SNAPSHOT_VERSION: u32 = 1;
/// Bytes of the snapshot header.
const SNAPSHOT_HEADER_BYTES: usize = 48;
/// Bytes of one producer's fixed part in a snapshot.
const SNAPSHOT_PRODUCER_BYTES: usize = 40;
/// Bytes of one remembered batch in a snapshot.
const SNAPSHOT_BATCH_BYTES: usize = 24;

/// Why a snapshot file was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SnapshotError {
    /// Damaged: short, bad magic, bad checksum, inconsistent lengths.
    Corrupt(String),
    /// A version this build does not read.
    Unsupported(u32),
}

impl ProducerTable {
    /// The snapshot of this table, covering every batch below `offset`
    /// (layout in `docs/format.md`, "Producer-state snapshots").
    pub fn encode(&self, id: crate::PartitionId, offset: i64) -> Vec<u8> {
        let mut ids: Vec<&i64> = self.producers.keys().collect();
        ids.sort();
        let mut b = Vec::with_capacity(
            SNAPSHOT_HEADER_BYTES
                + self.producers.len() * (SNAPSHOT_PRODUCER_BYTES + 2 * SNAPSHOT_BATCH_BYTES)
                + 4,
        );
        b.extend_from_slice(&SNAPSHOT_MAGIC);
        b.extend_from_slice(&SNAPSHOT_VERSION.to_be_bytes());
        b.extend_from_slice(&u32::from(self.complete).to_be_bytes());
        b.extend_from_slice(id.topic_id.as_bytes());
        b.extend_from_slice(&id.partition.to_be_bytes());
        b.extend_from_slice(&(ids.len() as u32).to_be_bytes());
        b.extend_from_slice(&offset.to_be_bytes());
        for id in ids {
            let Some(s) = self.producers.get(id) else {
                continue;
            };
            b.extend_from_slice(&id.to_be_bytes());
            b.extend_from_slice(&s.epoch.to_be_bytes());
            b.extend_from_slice(&(s.batches.len() as u16).to_be_bytes());
            b.extend_from_slice(&s.coordinator_epoch.to_be_bytes());
            b.extend_from_slice(&s.txn_first_offset.unwrap_or(-1).to_be_bytes());
            b.extend_from_slice(&s.last_timestamp.to_be_bytes());
            b.extend_from_slice(&[0u8; 8]);
            for batch in &s.batches {
                b.extend_from_slice(&batch.first_seq.to_be_bytes());
                b.extend_from_slice(&batch.last_seq.to_be_bytes());
                b.extend_from_slice(&batch.base_offset.to_be_bytes());
                b.extend_from_slice(&batch.last_offset.to_be_bytes());
            }
        }
        let crc = crc32c::crc32c(&b);
        b.extend_from_slice(&crc.to_be_bytes());
        b
    }

    /// Read a snapshot of partition `id` back: the table and the offset it
    /// covers up to.
    pub fn decode(b: &[u8], id: crate::PartitionId) -> Result<(Self, i64), SnapshotError> {
        use crate::format::{be_i16, be_i32, be_i64, be_u32};
        let corrupt = |what: &str| SnapshotError::Corrupt(what.to_string());
        if b.get(..8) != Some(&SNAPSHOT_MAGIC[..]) {
            return Err(corrupt("bad magic"));
        }
        let version = be_u32(b, 8).ok_or_else(|| corrupt("short header"))?;
        if version != SNAPSHOT_VERSION {
            return Err(SnapshotError::Unsupported(version));
        }
        let body_len = b
            .len()
            .checked_sub(4)
            .filter(|n| *n >= SNAPSHOT_HEADER_BYTES)
            .ok_or_else(|| corrupt("short file"))?;
        let stored = be_u32(b, body_len).ok_or_else(|| corrupt("short file"))?;
        if crc32c::crc32c(b.get(..body_len).unwrap_or_default()) != stored {
            return Err(corrupt("checksum mismatch"));
        }
        let flags = be_u32(b, 12).ok_or_else(|| corrupt("short header"))?;
        if b.get(16..32) != Some(&id.topic_id.as_bytes()[..]) || be_i32(b, 32) != Some(id.partition)
        {
            return Err(corrupt("the snapshot is of another partition"));
        }
        let count = be_u32(b, 36).ok_or_else(|| corrupt("short header"))?;
        let offset = be_i64(b, 40).ok_or_else(|| corrupt("short header"))?;
        let mut table = ProducerTable {
            complete: flags & 1 != 0,
            ..ProducerTable::default()
        };
        let mut at = SNAPSHOT_HEADER_BYTES;
        let field = |v: Option<i64>| v.ok_or_else(|| corrupt("a producer runs past the end"));
        for _ in 0..count {
            let producer_id = field(be_i64(b, at))?;
            let epoch = field(be_i16(b, at + 8).map(i64::from))? as i16;
            let batches = field(be_i16(b, at + 10).map(|v| i64::from(v as u16)))? as usize;
            let coordinator_epoch = field(be_i32(b, at + 12).map(i64::from))? as i32;
            let txn_first = field(be_i64(b, at + 16))?;
            let last_timestamp = field(be_i64(b, at + 24))?;
            if batches > PRODUCER_BATCHES_REMEMBERED {
                return Err(corrupt("a producer with more batches than are remembered"));
            }
            at += SNAPSHOT_PRODUCER_BYTES;
            let mut state = ProducerState {
                epoch,
                batches: VecDeque::with_capacity(batches),
                coordinator_epoch,
                txn_first_offset: (txn_first >= 0).then_some(txn_first),
                last_timestamp,
            };
            for _ in 0..batches {
                state.batches.push_back(SequencedBatch {
                    first_seq: field(be_i32(b, at).map(i64::from))? as i32,
                    last_seq: field(be_i32(b, at + 4).map(i64::from))? as i32,
                    base_offset: field(be_i64(b, at + 8))?,
                    last_offset: field(be_i64(b, at + 16))?,
                });
                at += SNAPSHOT_BATCH_BYTES;
            }
            table.put(producer_id, state);
        }
        if at != body_len {
            return Err(corrupt("bytes left after the last producer"));
        }
        Ok((table, offset))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(first: i32, last: i32, base: i64) -> SequencedBatch {
        SequencedBatch {
            first_seq: first,
            last_seq: last,
            base_offset: base,
            last_offset: base + i64::from(last - first),
        }
    }

    #[test]
    fn an_unknown_producer_starts_at_zero_unless_the_partition_may_have_forgotten_it() {
        assert_eq!(
            ProducerState::check(None, false, 1, 0, 77, 80).unwrap(),
            SequenceCheck::Accept
        );
        assert!(matches!(
            ProducerState::check(None, true, 1, 0, 77, 80),
            Err(AppendError::OutOfOrderSequence {
                expected: 0,
                got: 77,
                ..
            })
        ));
        assert_eq!(
            ProducerState::check(None, true, 1, 3, 0, 4).unwrap(),
            SequenceCheck::Accept
        );
    }

    #[test]
    fn a_full_table_forgets_and_is_then_incomplete() {
        let mut t = ProducerTable::default();
        assert!(t.complete());
        for id in 0..PRODUCERS_PER_PARTITION_MAX as i64 {
            t.put(id, ProducerState::default());
        }
        assert!(t.complete());
        t.put(-5, ProducerState::default());
        assert!(!t.complete());
    }

    #[test]
    fn only_the_last_five_batches_are_duplicates() {
        let mut s = ProducerState::default();
        for i in 0..6 {
            s.record(0, b(i * 2, i * 2 + 1, i64::from(i) * 2), false, 0);
        }
        assert!(matches!(
            ProducerState::check(Some(&s), true, 1, 0, 2, 3),
            Ok(SequenceCheck::Duplicate(d)) if d.base_offset == 2
        ));
        // The first batch was forgotten: it is now simply out of order.
        assert!(matches!(
            ProducerState::check(Some(&s), true, 1, 0, 0, 1),
            Err(AppendError::OutOfOrderSequence { expected: 12, .. })
        ));
    }

    #[test]
    fn higher_epoch_must_restart_at_zero_and_lower_epoch_is_fenced() {
        let mut s = ProducerState::default();
        s.record(3, b(0, 4, 0), false, 0);
        assert!(matches!(
            ProducerState::check(Some(&s), true, 1, 4, 5, 6),
            Err(AppendError::OutOfOrderSequence { expected: 0, .. })
        ));
        assert_eq!(
            ProducerState::check(Some(&s), true, 1, 4, 0, 1).unwrap(),
            SequenceCheck::Accept
        );
        assert!(matches!(
            ProducerState::check(Some(&s), true, 1, 2, 5, 6),
            Err(AppendError::InvalidProducerEpoch {
                current: 3,
                got: 2,
                ..
            })
        ));
    }

    #[test]
    fn sequence_after_i32_max_is_zero() {
        let mut s = ProducerState::default();
        s.record(0, b(i32::MAX - 1, i32::MAX, 0), false, 0);
        assert_eq!(
            ProducerState::check(Some(&s), true, 1, 0, 0, 3).unwrap(),
            SequenceCheck::Accept
        );
    }

    #[test]
    fn table_forgets_the_least_recently_active_producer_when_full() {
        let mut t = ProducerTable::default();
        for id in 0..PRODUCERS_PER_PARTITION_MAX as i64 + 1 {
            let mut s = ProducerState::default();
            s.record(0, b(0, 0, id), false, 0);
            t.put(id, s);
        }
        assert!(t.get(0).is_none());
        assert!(t.get(1).is_some());
    }
}
