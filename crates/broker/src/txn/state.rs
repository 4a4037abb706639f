//! What the transaction coordinator decides for one transactional id, as
//! Kafka's `TransactionCoordinator` does: each request, checked against the
//! id's stored state ([`TxnValue`]), either fails with Kafka's error code or
//! yields the next state to write. Nothing here writes or waits; `mod.rs`
//! writes the state to `__transaction_state` and applies it once durable.

use std::collections::BTreeSet;

use kafka_protocol::ResponseError;

use super::records::{TxnStatus, TxnValue};
use crate::producer_ids::{
    InitError, PRODUCER_EPOCH_EXHAUSTED, ProducerEpochs, ProducerIdAndEpoch, next_epochs,
};

/// What InitProducerId does to a transactional id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum InitDecision {
    /// Write this state, then answer its producer id and epoch.
    Answer(TxnValue),
    /// The id's transaction is open: write this state (its epoch bumped, so
    /// the old producer is fenced, and set to abort), abort it, and answer
    /// CONCURRENT_TRANSACTIONS; the producer retries once it is done.
    FenceAndAbort(TxnValue),
}

/// InitProducerId for `existing` (the id's state, `None` when new), with
/// the id and epoch the producer presents (`expected`, v3+).
pub(crate) fn init(
    existing: Option<&TxnValue>,
    expected: Option<ProducerIdAndEpoch>,
    timeout_ms: i32,
    now_ms: i64,
    fresh_id: impl FnOnce() -> Result<i64, weir_metadata::MetadataError>,
) -> Result<InitDecision, InitFailure> {
    let kept = match existing {
        None => None,
        Some(v) => match v.status {
            TxnStatus::PrepareCommit
            | TxnStatus::PrepareAbort
            | TxnStatus::PrepareEpochFence
            | TxnStatus::Dead => {
                return Err(InitFailure::Code(ResponseError::ConcurrentTransactions));
            }
            TxnStatus::Ongoing => {
                return Ok(InitDecision::FenceAndAbort(fenced_abort(v, now_ms)));
            }
            TxnStatus::Empty | TxnStatus::CompleteCommit | TxnStatus::CompleteAbort => {
                Some(ProducerEpochs {
                    current: ProducerIdAndEpoch {
                        producer_id: v.producer_id,
                        epoch: v.producer_epoch,
                    },
                    last: ProducerIdAndEpoch {
                        producer_id: v.last_producer_id,
                        epoch: v.last_producer_epoch,
                    },
                })
            }
        },
    };
    let next = next_epochs(kept.as_ref(), expected, fresh_id).map_err(InitFailure::Init)?;
    Ok(InitDecision::Answer(TxnValue {
        producer_id: next.current.producer_id,
        last_producer_id: next.last.producer_id,
        producer_epoch: next.current.epoch,
        last_producer_epoch: next.last.epoch,
        timeout_ms,
        status: TxnStatus::Empty,
        partitions: BTreeSet::new(),
        start_ms: -1,
        update_ms: now_ms,
    }))
}

/// Why InitProducerId failed.
#[derive(Debug)]
pub(crate) enum InitFailure {
    /// Kafka's error code.
    Code(ResponseError),
    /// The epoch rules refused the producer, or no id could be reserved.
    Init(InitError),
}

/// The state that fences `v`'s producer and aborts its open transaction:
/// the epoch bumped (the old producer's next request is PRODUCER_FENCED),
/// set to abort. At an exhausted epoch the epoch stays: the next
/// InitProducerId moves the id to a new producer id anyway.
pub(crate) fn fenced_abort(v: &TxnValue, now_ms: i64) -> TxnValue {
    fenced_end(v, false, now_ms)
}

/// [`fenced_abort`], or its commit (`commit`): what check-back writes when
/// the application's service decides a transaction its producer left.
pub(crate) fn fenced_end(v: &TxnValue, commit: bool, now_ms: i64) -> TxnValue {
    let epoch = if v.producer_epoch < PRODUCER_EPOCH_EXHAUSTED {
        v.producer_epoch + 1
    } else {
        v.producer_epoch
    };
    TxnValue {
        producer_epoch: epoch,
        last_producer_epoch: v.producer_epoch,
        status: if commit {
            TxnStatus::PrepareCommit
        } else {
            TxnStatus::PrepareAbort
        },
        update_ms: now_ms,
        ..v.clone()
    }
}

/// The producer presenting (`producer_id`, `epoch`) is `v`'s current one.
fn check_producer(v: &TxnValue, producer_id: i64, epoch: i16) -> Result<(), ResponseError> {
    if producer_id != v.producer_id {
        return Err(ResponseError::InvalidProducerIdMapping);
    }
    if epoch != v.producer_epoch {
        return Err(ResponseError::ProducerFenced);
    }
    Ok(())
}

/// AddPartitionsToTxn (and AddOffsetsToTxn, whose partition is the group's
/// `__consumer_offsets` partition): the state to write, or `None` when the
/// partitions are in the open transaction already.
pub(crate) fn add_partitions(
    v: &TxnValue,
    producer_id: i64,
    epoch: i16,
    partitions: &[(String, i32)],
    now_ms: i64,
) -> Result<Option<TxnValue>, ResponseError> {
    check_producer(v, producer_id, epoch)?;
    match v.status {
        TxnStatus::PrepareCommit | TxnStatus::PrepareAbort | TxnStatus::PrepareEpochFence => {
            Err(ResponseError::ConcurrentTransactions)
        }
        TxnStatus::Dead => Err(ResponseError::InvalidProducerIdMapping),
        TxnStatus::Ongoing if partitions.iter().all(|p| v.partitions.contains(p)) => Ok(None),
        TxnStatus::Ongoing => {
            let mut next = v.clone();
            next.partitions.extend(partitions.iter().cloned());
            next.update_ms = now_ms;
            Ok(Some(next))
        }
        TxnStatus::Empty | TxnStatus::CompleteCommit | TxnStatus::CompleteAbort => {
            Ok(Some(TxnValue {
                status: TxnStatus::Ongoing,
                partitions: partitions.iter().cloned().collect(),
                start_ms: now_ms,
                update_ms: now_ms,
                ..v.clone()
            }))
        }
    }
}

/// Whether `v`'s producer may write to `partition` in a transaction now
/// (KIP-890's verification of a transactional produce, and of a
/// TxnOffsetCommit): its transaction is open with the partition in it.
pub(crate) fn verify(
    v: &TxnValue,
    producer_id: i64,
    epoch: i16,
    partition: &(String, i32),
) -> Result<(), ResponseError> {
    if producer_id != v.producer_id {
        return Err(ResponseError::InvalidProducerIdMapping);
    }
    if epoch < v.producer_epoch {
        return Err(ResponseError::ProducerFenced);
    }
    if epoch > v.producer_epoch || v.status != TxnStatus::Ongoing {
        return Err(ResponseError::InvalidTxnState);
    }
    if !v.partitions.contains(partition) {
        return Err(ResponseError::InvalidTxnState);
    }
    Ok(())
}

/// What EndTxn does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum EndDecision {
    /// Write this state (PrepareCommit or PrepareAbort), answer, then write
    /// the markers.
    Prepare(TxnValue),
    /// The transaction already ended this way (a retried EndTxn): answer.
    Done,
}

/// EndTxn: commit (`commit`) or abort `v`'s open transaction.
pub(crate) fn end(
    v: &TxnValue,
    producer_id: i64,
    epoch: i16,
    commit: bool,
    now_ms: i64,
) -> Result<EndDecision, ResponseError> {
    check_producer(v, producer_id, epoch)?;
    match (v.status, commit) {
        (TxnStatus::Ongoing, _) => Ok(EndDecision::Prepare(TxnValue {
            status: if commit {
                TxnStatus::PrepareCommit
            } else {
                TxnStatus::PrepareAbort
            },
            update_ms: now_ms,
            ..v.clone()
        })),
        (TxnStatus::PrepareCommit, true) | (TxnStatus::PrepareAbort, false) => {
            Err(ResponseError::ConcurrentTransactions)
        }
        (TxnStatus::CompleteCommit, true) | (TxnStatus::CompleteAbort, false) => {
            Ok(EndDecision::Done)
        }
        (TxnStatus::PrepareEpochFence, _) => Err(ResponseError::ProducerFenced),
        (TxnStatus::Dead, _) => Err(ResponseError::InvalidProducerIdMapping),
        _ => Err(ResponseError::InvalidTxnState),
    }
}

/// The state once every marker of `v` (PrepareCommit or PrepareAbort) is
/// written: complete, with no partitions.
pub(crate) fn complete(v: &TxnValue, now_ms: i64) -> TxnValue {
    TxnValue {
        status: if v.status == TxnStatus::PrepareCommit {
            TxnStatus::CompleteCommit
        } else {
            TxnStatus::CompleteAbort
        },
        partitions: BTreeSet::new(),
        start_ms: -1,
        update_ms: now_ms,
        ..v.clone()
    }
}

/// Whether `v`'s open transaction ran past its timeout.
pub(crate) fn timed_out(v: &TxnValue, now_ms: i64) -> bool {
    v.status == TxnStatus::Ongoing && v.start_ms.saturating_add(i64::from(v.timeout_ms)) < now_ms
}

/// Whether `v`'s id has been idle for `expiration_ms` with no transaction
/// open (`transactional.id.expiration.ms`): it is forgotten.
pub(crate) fn expired(v: &TxnValue, now_ms: i64, expiration_ms: i64) -> bool {
    matches!(
        v.status,
        TxnStatus::Empty | TxnStatus::CompleteCommit | TxnStatus::CompleteAbort
    ) && v.update_ms.saturating_add(expiration_ms) < now_ms
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(status: TxnStatus) -> TxnValue {
        TxnValue {
            producer_id: 7,
            last_producer_id: -1,
            producer_epoch: 2,
            last_producer_epoch: -1,
            timeout_ms: 1_000,
            status,
            partitions: [("t".to_string(), 0)].into_iter().collect(),
            start_ms: 100,
            update_ms: 100,
        }
    }

    fn parts(names: &[(&str, i32)]) -> Vec<(String, i32)> {
        names.iter().map(|(t, p)| (t.to_string(), *p)).collect()
    }

    #[test]
    fn a_new_id_gets_a_fresh_producer_at_epoch_zero_and_an_old_one_a_bump() {
        let InitDecision::Answer(v) = init(None, None, 5_000, 1, || Ok(99)).unwrap() else {
            panic!("a new id is answered");
        };
        assert_eq!(
            (v.producer_id, v.producer_epoch, v.status),
            (99, 0, TxnStatus::Empty)
        );
        let InitDecision::Answer(next) = init(Some(&v), None, 5_000, 2, || Ok(100)).unwrap() else {
            panic!("an idle id is answered");
        };
        assert_eq!((next.producer_id, next.producer_epoch), (99, 1));
    }

    #[test]
    fn init_of_an_id_with_an_open_transaction_fences_and_aborts_it() {
        let open = value(TxnStatus::Ongoing);
        let InitDecision::FenceAndAbort(v) = init(Some(&open), None, 5_000, 9, || Ok(1)).unwrap()
        else {
            panic!("an open transaction is aborted first");
        };
        assert_eq!((v.producer_epoch, v.status), (3, TxnStatus::PrepareAbort));
        assert_eq!(v.partitions, open.partitions);
        for busy in [TxnStatus::PrepareCommit, TxnStatus::PrepareAbort] {
            assert!(matches!(
                init(Some(&value(busy)), None, 5_000, 9, || Ok(1)),
                Err(InitFailure::Code(ResponseError::ConcurrentTransactions))
            ));
        }
    }

    #[test]
    fn adding_partitions_opens_a_transaction_and_misuse_gets_kafkas_codes() {
        let idle = value(TxnStatus::CompleteCommit);
        let v = add_partitions(&idle, 7, 2, &parts(&[("a", 1)]), 500)
            .unwrap()
            .unwrap();
        assert_eq!(v.status, TxnStatus::Ongoing);
        assert_eq!(v.start_ms, 500);
        assert_eq!(
            v.partitions.len(),
            1,
            "the last transaction's partitions are gone"
        );
        assert_eq!(
            add_partitions(&v, 7, 2, &parts(&[("a", 1)]), 600).unwrap(),
            None
        );
        assert_eq!(
            add_partitions(&v, 7, 1, &parts(&[("b", 0)]), 600).unwrap_err(),
            ResponseError::ProducerFenced
        );
        assert_eq!(
            add_partitions(&v, 8, 2, &parts(&[("b", 0)]), 600).unwrap_err(),
            ResponseError::InvalidProducerIdMapping
        );
        assert_eq!(
            add_partitions(
                &value(TxnStatus::PrepareCommit),
                7,
                2,
                &parts(&[("b", 0)]),
                600
            )
            .unwrap_err(),
            ResponseError::ConcurrentTransactions
        );
    }

    #[test]
    fn end_prepares_once_and_a_retry_of_a_finished_end_succeeds() {
        let open = value(TxnStatus::Ongoing);
        let EndDecision::Prepare(p) = end(&open, 7, 2, true, 9).unwrap() else {
            panic!("an open transaction prepares");
        };
        assert_eq!(p.status, TxnStatus::PrepareCommit);
        assert_eq!(
            end(&p, 7, 2, true, 9).unwrap_err(),
            ResponseError::ConcurrentTransactions
        );
        let done = complete(&p, 10);
        assert_eq!(done.status, TxnStatus::CompleteCommit);
        assert!(done.partitions.is_empty());
        assert_eq!(end(&done, 7, 2, true, 11).unwrap(), EndDecision::Done);
        assert_eq!(
            end(&done, 7, 2, false, 11).unwrap_err(),
            ResponseError::InvalidTxnState
        );
        assert_eq!(
            end(&value(TxnStatus::Empty), 7, 2, true, 11).unwrap_err(),
            ResponseError::InvalidTxnState
        );
    }

    #[test]
    fn a_produce_is_verified_against_the_open_transaction() {
        let open = value(TxnStatus::Ongoing);
        assert!(verify(&open, 7, 2, &("t".to_string(), 0)).is_ok());
        assert_eq!(
            verify(&open, 7, 2, &("t".to_string(), 1)).unwrap_err(),
            ResponseError::InvalidTxnState
        );
        assert_eq!(
            verify(&open, 7, 1, &("t".to_string(), 0)).unwrap_err(),
            ResponseError::ProducerFenced
        );
        assert_eq!(
            verify(
                &value(TxnStatus::CompleteAbort),
                7,
                2,
                &("t".to_string(), 0)
            )
            .unwrap_err(),
            ResponseError::InvalidTxnState
        );
    }

    #[test]
    fn timeouts_and_expiry() {
        let open = value(TxnStatus::Ongoing);
        assert!(!timed_out(&open, 1_100));
        assert!(timed_out(&open, 1_101));
        assert!(!timed_out(&value(TxnStatus::CompleteAbort), 1_000_000));
        assert!(expired(&value(TxnStatus::CompleteAbort), 1_101, 1_000));
        assert!(!expired(&open, 1_000_000, 1_000));
    }
}
