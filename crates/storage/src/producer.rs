//! Idempotent-producer state of one partition: per producer id, the current
//! epoch and the last five batches, to spot retried duplicates and sequence
//! gaps.
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

use std::collections::{HashMap, VecDeque};

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

#[derive(Debug, Clone, Default)]
pub(crate) struct ProducerState {
    epoch: i16,
    batches: VecDeque<SequencedBatch>,
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

    /// Remember an accepted batch.
    pub fn record(&mut self, epoch: i16, batch: SequencedBatch) {
        if epoch != self.epoch {
            self.epoch = epoch;
            self.batches.clear();
        }
        self.batches.push_back(batch);
        while self.batches.len() > PRODUCER_BATCHES_REMEMBERED {
            self.batches.pop_front();
        }
    }

    fn last_offset(&self) -> i64 {
        self.batches.back().map_or(-1, |b| b.last_offset)
    }
}

/// Every producer's state in one partition.
#[derive(Debug)]
pub(crate) struct ProducerTable {
    producers: HashMap<i64, ProducerState>,
    /// No producer has been forgotten (see the module comment).
    complete: bool,
}

impl Default for ProducerTable {
    /// A new partition's: it has forgotten nothing.
    fn default() -> Self {
        Self {
            producers: HashMap::new(),
            complete: true,
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
    /// producer when the table is full.
    pub fn put(&mut self, producer_id: i64, state: ProducerState) {
        if !self.producers.contains_key(&producer_id)
            && self.producers.len() >= PRODUCERS_PER_PARTITION_MAX
        {
            let oldest = self
                .producers
                .iter()
                .min_by_key(|(_, s)| s.last_offset())
                .map(|(id, _)| *id);
            if let Some(id) = oldest {
                self.producers.remove(&id);
                self.complete = false;
            }
        }
        self.producers.insert(producer_id, state);
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
            s.record(0, b(i * 2, i * 2 + 1, i64::from(i) * 2));
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
        s.record(3, b(0, 4, 0));
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
        s.record(0, b(i32::MAX - 1, i32::MAX, 0));
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
            s.record(0, b(0, 0, id));
            t.put(id, s);
        }
        assert!(t.get(0).is_none());
        assert!(t.get(1).is_some());
    }
}
