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
        next_producer_id: -1,
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
///
/// The epoch moves two past the producer's, as Kafka's coordinator moves it
/// with transaction version 2 (its fence bump, then the end's own): a
/// producer's EndTxn one epoch behind is a retry of an end it made itself
/// ([`end`]), which a fenced producer must never pass for.
pub(crate) fn fenced_end(v: &TxnValue, commit: bool, now_ms: i64) -> TxnValue {
    let epoch = if v.producer_epoch < PRODUCER_EPOCH_EXHAUSTED {
        v.producer_epoch.saturating_add(2)
    } else {
        v.producer_epoch
    };
    TxnValue {
        producer_epoch: epoch,
        last_producer_epoch: v.producer_epoch,
        ..prepare(v, commit, now_ms)
    }
}

/// `v` set to commit (`commit`) or abort: PrepareCommit or PrepareAbort.
fn prepare(v: &TxnValue, commit: bool, now_ms: i64) -> TxnValue {
    TxnValue {
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
    /// The transaction already ended this way (a retried EndTxn): answer
    /// with the producer id and epoch the producer goes on with.
    Done(ProducerIdAndEpoch),
}

/// Which of Kafka's rules an EndTxn follows (`transaction.version`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EndRules {
    /// EndTxn v4 and older: the producer keeps its epoch.
    V1,
    /// EndTxn v5 (KIP-890 part 2): every end bumps the epoch, and the
    /// answer names the producer id and epoch to go on with. A producer may
    /// abort a transaction it never added a partition to (its partitions
    /// join implicitly, so it cannot know), and a retry is known by the
    /// epoch before the bump.
    V2,
}

/// EndTxn: commit (`commit`) or abort `v`'s open transaction. `fresh_id`
/// is a new producer id for an end of [`EndRules::V2`] whose bump takes
/// the last epoch of the producer id; `None` when none was reserved.
pub(crate) fn end(
    v: &TxnValue,
    (producer_id, epoch): (i64, i16),
    commit: bool,
    rules: EndRules,
    (now_ms, fresh_id): (i64, Option<i64>),
) -> Result<EndDecision, ResponseError> {
    if rules == EndRules::V1 {
        check_producer(v, producer_id, epoch)?;
        return match (v.status, commit) {
            (TxnStatus::Ongoing, _) => Ok(EndDecision::Prepare(prepare(v, commit, now_ms))),
            (TxnStatus::PrepareCommit, true) | (TxnStatus::PrepareAbort, false) => {
                Err(ResponseError::ConcurrentTransactions)
            }
            (TxnStatus::CompleteCommit, true) | (TxnStatus::CompleteAbort, false) => {
                Ok(EndDecision::Done(current(v)))
            }
            (TxnStatus::PrepareEpochFence, _) => Err(ResponseError::ProducerFenced),
            (TxnStatus::Dead, _) => Err(ResponseError::InvalidProducerIdMapping),
            _ => Err(ResponseError::InvalidTxnState),
        };
    }
    // A retry of an end that bumped the epoch, or that moved the producer
    // to a new id when the bump took the old id's last epoch.
    let retry_of_bump = i32::from(v.producer_epoch) == i32::from(epoch) + 1;
    let retry_of_move = v.last_producer_id == producer_id
        && v.producer_id != producer_id
        && epoch == PRODUCER_EPOCH_EXHAUSTED
        && v.producer_epoch == 0;
    if producer_id != v.producer_id && !retry_of_move {
        return Err(ResponseError::InvalidProducerIdMapping);
    }
    let retry = retry_of_bump || retry_of_move;
    let valid_epoch = match v.status {
        TxnStatus::Ongoing | TxnStatus::Empty | TxnStatus::Dead | TxnStatus::PrepareEpochFence => {
            epoch == v.producer_epoch
        }
        TxnStatus::PrepareCommit | TxnStatus::PrepareAbort => retry_of_bump,
        TxnStatus::CompleteCommit | TxnStatus::CompleteAbort => retry || epoch == v.producer_epoch,
    };
    if !valid_epoch {
        return Err(ResponseError::ProducerFenced);
    }
    // The end itself: the epoch bumped, and at the id's last epoch the
    // producer moves to a new id once the markers are written.
    let bumped = |v: &TxnValue, no_partition: bool| -> Result<EndDecision, ResponseError> {
        // No producer is ever given the very last epoch (a fence may move
        // the id there): one that names it holds nothing to end.
        let Some(producer_epoch) = v.producer_epoch.checked_add(1) else {
            return Err(ResponseError::ProducerFenced);
        };
        let next_producer_id = if v.producer_epoch >= PRODUCER_EPOCH_EXHAUSTED {
            // Reserved before the state was locked; a state that reached
            // the last epoch since is retried.
            fresh_id.ok_or(ResponseError::ConcurrentTransactions)?
        } else {
            -1
        };
        Ok(EndDecision::Prepare(TxnValue {
            producer_epoch,
            last_producer_epoch: v.producer_epoch,
            next_producer_id,
            start_ms: if no_partition { now_ms } else { v.start_ms },
            ..prepare(v, commit, now_ms)
        }))
    };
    match (v.status, commit) {
        (TxnStatus::Ongoing, _) => bumped(v, false),
        (TxnStatus::PrepareCommit, true) | (TxnStatus::PrepareAbort, false) => {
            Err(ResponseError::ConcurrentTransactions)
        }
        (TxnStatus::CompleteCommit, true) | (TxnStatus::CompleteAbort, false) if retry => {
            Ok(EndDecision::Done(current(v)))
        }
        // An abort with no transaction open: the producer cannot know
        // whether its partitions joined one, so it may abort all the same.
        (TxnStatus::Empty | TxnStatus::CompleteAbort, false)
        | (TxnStatus::CompleteCommit, false)
            if !retry =>
        {
            bumped(v, true)
        }
        (TxnStatus::PrepareEpochFence, _) => Err(ResponseError::ProducerFenced),
        (TxnStatus::Dead, _) => Err(ResponseError::InvalidProducerIdMapping),
        _ => Err(ResponseError::InvalidTxnState),
    }
}

/// The producer id and epoch `v`'s producer has now.
fn current(v: &TxnValue) -> ProducerIdAndEpoch {
    ProducerIdAndEpoch {
        producer_id: v.producer_id,
        epoch: v.producer_epoch,
    }
}

/// The producer id and epoch `v`'s producer goes on with once `v` (a
/// Prepare state) completes: its id and epoch, or the new id at epoch 0.
pub(crate) fn after_end(v: &TxnValue) -> ProducerIdAndEpoch {
    if v.next_producer_id >= 0 {
        ProducerIdAndEpoch {
            producer_id: v.next_producer_id,
            epoch: 0,
        }
    } else {
        current(v)
    }
}

/// The state once every marker of `v` (PrepareCommit or PrepareAbort) is
/// written: complete, with no partitions, and with the new producer id
/// when the end moved to one (the old one stays known, so a retried end
/// is recognised).
pub(crate) fn complete(v: &TxnValue, now_ms: i64) -> TxnValue {
    let moved = v.next_producer_id >= 0;
    TxnValue {
        status: if v.status == TxnStatus::PrepareCommit {
            TxnStatus::CompleteCommit
        } else {
            TxnStatus::CompleteAbort
        },
        partitions: BTreeSet::new(),
        start_ms: -1,
        update_ms: now_ms,
        producer_id: after_end(v).producer_id,
        producer_epoch: after_end(v).epoch,
        last_producer_id: if moved {
            v.producer_id
        } else {
            v.last_producer_id
        },
        next_producer_id: -1,
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
            next_producer_id: -1,
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
        assert_eq!((v.producer_epoch, v.status), (4, TxnStatus::PrepareAbort));
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

    fn pid(producer_id: i64, epoch: i16) -> ProducerIdAndEpoch {
        ProducerIdAndEpoch { producer_id, epoch }
    }

    #[test]
    fn end_prepares_once_and_a_retry_of_a_finished_end_succeeds() {
        let v1 = |v: &TxnValue, commit: bool| end(v, (7, 2), commit, EndRules::V1, (9, None));
        let open = value(TxnStatus::Ongoing);
        let EndDecision::Prepare(p) = v1(&open, true).unwrap() else {
            panic!("an open transaction prepares");
        };
        assert_eq!((p.status, p.producer_epoch), (TxnStatus::PrepareCommit, 2));
        assert_eq!(
            v1(&p, true).unwrap_err(),
            ResponseError::ConcurrentTransactions
        );
        let done = complete(&p, 10);
        assert_eq!(done.status, TxnStatus::CompleteCommit);
        assert!(done.partitions.is_empty());
        assert_eq!(v1(&done, true).unwrap(), EndDecision::Done(pid(7, 2)));
        assert_eq!(
            v1(&done, false).unwrap_err(),
            ResponseError::InvalidTxnState
        );
        assert_eq!(
            v1(&value(TxnStatus::Empty), true).unwrap_err(),
            ResponseError::InvalidTxnState
        );
    }

    #[test]
    fn an_end_of_transaction_version_2_bumps_the_epoch_and_knows_its_retry() {
        let v2 = |v: &TxnValue, epoch: i16, commit: bool| {
            end(v, (7, epoch), commit, EndRules::V2, (9, None))
        };
        let open = value(TxnStatus::Ongoing);
        let EndDecision::Prepare(p) = v2(&open, 2, true).unwrap() else {
            panic!("an open transaction prepares");
        };
        assert_eq!(
            (p.status, p.producer_epoch, p.last_producer_epoch),
            (TxnStatus::PrepareCommit, 3, 2),
            "the markers carry the bumped epoch"
        );
        assert_eq!(after_end(&p), pid(7, 3));
        assert_eq!(p.partitions, open.partitions);
        // A retry while the markers are written, and after.
        assert_eq!(
            v2(&p, 2, true).unwrap_err(),
            ResponseError::ConcurrentTransactions
        );
        let done = complete(&p, 10);
        assert_eq!(v2(&done, 2, true).unwrap(), EndDecision::Done(pid(7, 3)));
        assert_eq!(
            v2(&done, 2, false).unwrap_err(),
            ResponseError::InvalidTxnState
        );
        // The next transaction, at the new epoch: a commit with none open is
        // refused, an abort bumps the epoch all the same.
        assert_eq!(
            v2(&done, 3, true).unwrap_err(),
            ResponseError::InvalidTxnState
        );
        let EndDecision::Prepare(empty) = v2(&done, 3, false).unwrap() else {
            panic!("an abort with nothing open still ends");
        };
        assert_eq!(
            (empty.status, empty.producer_epoch, empty.partitions.len()),
            (TxnStatus::PrepareAbort, 4, 0)
        );
        // Older epochs are fenced; so is the epoch a fence skipped over.
        assert_eq!(
            v2(&done, 1, true).unwrap_err(),
            ResponseError::ProducerFenced
        );
        let fenced = complete(&fenced_abort(&open, 9), 10);
        assert_eq!(fenced.producer_epoch, 4);
        assert_eq!(
            v2(&fenced, 2, false).unwrap_err(),
            ResponseError::ProducerFenced,
            "the fenced producer's abort is no retry: epoch 3 was never handed out"
        );
        assert_eq!(
            v2(&value(TxnStatus::Empty), 2, true).unwrap_err(),
            ResponseError::InvalidTxnState
        );
    }

    #[test]
    fn a_bump_to_the_last_epoch_moves_the_producer_to_a_new_id() {
        let last = TxnValue {
            producer_epoch: PRODUCER_EPOCH_EXHAUSTED,
            ..value(TxnStatus::Ongoing)
        };
        let ended = |v: &TxnValue, producer: (i64, i16), fresh: Option<i64>| {
            end(v, producer, true, EndRules::V2, (9, fresh))
        };
        assert_eq!(
            ended(&last, (7, PRODUCER_EPOCH_EXHAUSTED), None).unwrap_err(),
            ResponseError::ConcurrentTransactions,
            "no id reserved: retried"
        );
        let EndDecision::Prepare(p) =
            ended(&last, (7, PRODUCER_EPOCH_EXHAUSTED), Some(70)).unwrap()
        else {
            panic!("the last epoch prepares");
        };
        assert_eq!(
            (p.producer_id, p.producer_epoch, p.next_producer_id),
            (7, i16::MAX, 70),
            "the markers carry the old id at its very last epoch"
        );
        assert_eq!(after_end(&p), pid(70, 0));
        let done = complete(&p, 10);
        assert_eq!(
            (done.producer_id, done.producer_epoch, done.last_producer_id),
            (70, 0, 7)
        );
        assert_eq!(done.next_producer_id, -1);
        // The old id's retry is known; the new id goes on.
        assert_eq!(
            ended(&done, (7, PRODUCER_EPOCH_EXHAUSTED), None).unwrap(),
            EndDecision::Done(pid(70, 0))
        );
        assert_eq!(
            ended(&done, (7, 3), None).unwrap_err(),
            ResponseError::InvalidProducerIdMapping
        );
        // A fence may take an id to the very last epoch, which no producer
        // holds: an abort that names it ends nothing and bumps nothing.
        let spent = complete(
            &fenced_abort(
                &TxnValue {
                    producer_epoch: PRODUCER_EPOCH_EXHAUSTED - 1,
                    ..value(TxnStatus::Ongoing)
                },
                9,
            ),
            10,
        );
        assert_eq!(spent.producer_epoch, i16::MAX);
        assert_eq!(
            end(&spent, (7, i16::MAX), false, EndRules::V2, (9, Some(71))).unwrap_err(),
            ResponseError::ProducerFenced
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
