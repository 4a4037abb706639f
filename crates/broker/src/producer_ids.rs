//! Producer ids and epochs: which id and epoch InitProducerId hands out
//! ([`next_epochs`], Kafka's rules from KIP-360), and the ids themselves,
//! reserved from the metadata store in blocks, so handing one out is usually
//! a counter increment rather than a durable write. Ids left in a block when
//! the broker stops are skipped, never reused: the store only moves forward.

use std::ops::Range;
use std::sync::Mutex;

use weir_metadata::{MetadataError, MetadataStore};

/// "No producer id" and "no epoch" on the wire and in the log.
pub(crate) const NO_PRODUCER_ID: i64 = -1;
pub(crate) const NO_PRODUCER_EPOCH: i16 = -1;
/// From this epoch on a producer id is exhausted: the next InitProducerId
/// gives a new id at epoch 0 instead of a bump, as in Kafka, so an epoch
/// never wraps to a value a partition has already seen.
pub(crate) const PRODUCER_EPOCH_EXHAUSTED: i16 = i16::MAX - 1;

/// A producer id with its epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProducerIdAndEpoch {
    pub(crate) producer_id: i64,
    pub(crate) epoch: i16,
}

/// What is kept for one producer between InitProducerId calls: its id and
/// epoch, and the ones before the last change, so a retried call whose
/// answer was lost is recognised rather than fenced. Kafka keeps this per
/// transactional id; an idempotent producer has none kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProducerEpochs {
    pub(crate) current: ProducerIdAndEpoch,
    pub(crate) last: ProducerIdAndEpoch,
}

/// Why InitProducerId refuses a producer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum InitError {
    /// The producer presented an id or epoch that is no longer current:
    /// a newer producer has taken over (PRODUCER_FENCED).
    #[error("producer id {producer_id} with epoch {epoch} is fenced by a newer producer")]
    Fenced { producer_id: i64, epoch: i16 },
    /// A new producer id could not be reserved.
    #[error(transparent)]
    Store(#[from] MetadataError),
}

/// The id and epoch InitProducerId answers, as Kafka's transaction
/// coordinator decides them (KIP-360).
///
/// `kept` is what is kept for the producer: `None` for an idempotent
/// producer, which Kafka answers with a fresh id at epoch 0 whatever id and
/// epoch it presents (it bumps its epoch itself, and asks for a new id only
/// when it must), and `None` for a transactional id seen for the first time.
/// With something kept, the presented pair (`expected`) must be the current
/// one, or the previous one retried; otherwise the producer is fenced. The
/// epoch is bumped, and an exhausted epoch moves to a new id at epoch 0.
pub(crate) fn next_epochs<E>(
    kept: Option<&ProducerEpochs>,
    expected: Option<ProducerIdAndEpoch>,
    fresh_id: impl FnOnce() -> Result<i64, E>,
) -> Result<ProducerEpochs, InitError>
where
    InitError: From<E>,
{
    const NONE: ProducerIdAndEpoch = ProducerIdAndEpoch {
        producer_id: NO_PRODUCER_ID,
        epoch: NO_PRODUCER_EPOCH,
    };
    let Some(kept) = kept.filter(|k| k.current.epoch != NO_PRODUCER_EPOCH) else {
        let producer_id = fresh_id()?;
        return Ok(ProducerEpochs {
            current: ProducerIdAndEpoch {
                producer_id,
                epoch: 0,
            },
            last: NONE,
        });
    };
    let current = kept.current;
    let fenced = |e: ProducerIdAndEpoch| InitError::Fenced {
        producer_id: e.producer_id,
        epoch: e.epoch,
    };
    if let Some(e) = expected {
        let retry_after_rotation =
            e.producer_id == kept.last.producer_id && e.epoch >= PRODUCER_EPOCH_EXHAUSTED;
        if e.producer_id != current.producer_id && !retry_after_rotation {
            return Err(fenced(e));
        }
    }
    if current.epoch >= PRODUCER_EPOCH_EXHAUSTED
        && expected.is_none_or(|e| e.epoch == current.epoch)
    {
        let producer_id = fresh_id()?;
        return Ok(ProducerEpochs {
            current: ProducerIdAndEpoch {
                producer_id,
                epoch: 0,
            },
            last: if expected.is_some() { current } else { NONE },
        });
    }
    let bumped = ProducerIdAndEpoch {
        producer_id: current.producer_id,
        epoch: current.epoch + 1,
    };
    match expected {
        None => Ok(ProducerEpochs {
            current: bumped,
            last: NONE,
        }),
        Some(e) if e.epoch == current.epoch => Ok(ProducerEpochs {
            current: bumped,
            last: current,
        }),
        // The answer to the bump from this epoch was lost: answer it again.
        Some(e) if e.epoch == kept.last.epoch => Ok(*kept),
        Some(e) => Err(fenced(e)),
    }
}

/// Producer ids reserved from the store at a time.
pub(crate) const PRODUCER_ID_BLOCK_SIZE: i64 = 1000;

/// The unused rest of the current block.
#[derive(Debug, Default)]
pub(crate) struct ProducerIds {
    block: Mutex<Range<i64>>,
}

impl ProducerIds {
    /// A producer id never handed out before, by this broker or an earlier run of it.
    pub(crate) fn next(&self, store: &dyn MetadataStore) -> Result<i64, MetadataError> {
        // The lock is held across the (rare) durable reservation so two
        // callers never both reserve a block for one id.
        let mut block = weir_sync::lock(&self.block)?;
        if block.is_empty() {
            let first = store.allocate_producer_ids(PRODUCER_ID_BLOCK_SIZE)?;
            *block = first..first.saturating_add(PRODUCER_ID_BLOCK_SIZE);
        }
        let id = block.start;
        block.start += 1;
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use weir_metadata::LocalMetadataStore;

    use super::*;

    #[test]
    fn ids_are_unique_and_reserved_a_block_at_a_time() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = LocalMetadataStore::open(dir.path()).expect("store");
        let ids = ProducerIds::default();
        let handed: Vec<i64> = (0..2500).map(|_| ids.next(&store).expect("id")).collect();
        assert_eq!(handed, (0..2500).collect::<Vec<_>>());
        // Three blocks were reserved; the next reservation starts after them.
        assert_eq!(store.allocate_producer_ids(1).expect("id"), 3000);
    }

    fn pair(producer_id: i64, epoch: i16) -> ProducerIdAndEpoch {
        ProducerIdAndEpoch { producer_id, epoch }
    }

    fn kept(current: ProducerIdAndEpoch, last: ProducerIdAndEpoch) -> ProducerEpochs {
        ProducerEpochs { current, last }
    }

    fn fresh() -> Result<i64, MetadataError> {
        Ok(500)
    }

    #[test]
    fn an_idempotent_producer_gets_a_fresh_id_whatever_it_presents() {
        for expected in [
            None,
            Some(pair(7, 3)),
            Some(pair(123_456, 0)),
            Some(pair(7, i16::MAX)),
        ] {
            let next = next_epochs(None, expected, fresh).expect("fresh id");
            assert_eq!(next.current, pair(500, 0), "{expected:?}");
        }
    }

    #[test]
    fn the_current_epoch_is_bumped_and_a_stale_one_is_fenced() {
        let state = kept(pair(7, 3), pair(7, 2));
        let bumped = next_epochs(Some(&state), Some(pair(7, 3)), fresh).expect("bump");
        assert_eq!(bumped, kept(pair(7, 4), pair(7, 3)));
        // A retry of that bump, whose answer was lost, gets the same answer.
        let retried = next_epochs(Some(&bumped), Some(pair(7, 3)), fresh).expect("retry");
        assert_eq!(retried, bumped);
        // An older epoch, or another producer's id, is fenced.
        for stale in [pair(7, 1), pair(8, 4)] {
            assert!(
                matches!(
                    next_epochs(Some(&bumped), Some(stale), fresh),
                    Err(InitError::Fenced { .. })
                ),
                "{stale:?}"
            );
        }
        // Without a presented pair the epoch is bumped (a producer restarting).
        let restarted = next_epochs(Some(&bumped), None, fresh).expect("bump");
        assert_eq!(restarted.current, pair(7, 5));
    }

    #[test]
    fn an_exhausted_epoch_moves_to_a_new_id() {
        let exhausted = kept(pair(7, PRODUCER_EPOCH_EXHAUSTED), pair(7, 32_765));
        let rotated = next_epochs(
            Some(&exhausted),
            Some(pair(7, PRODUCER_EPOCH_EXHAUSTED)),
            fresh,
        )
        .expect("rotate");
        assert_eq!(
            rotated,
            kept(pair(500, 0), pair(7, PRODUCER_EPOCH_EXHAUSTED))
        );
        // The retry of that rotation, with the old id, is not fenced.
        let retried = next_epochs(
            Some(&rotated),
            Some(pair(7, PRODUCER_EPOCH_EXHAUSTED)),
            fresh,
        )
        .expect("retry");
        assert_eq!(retried, rotated);
    }

    #[test]
    fn a_producer_kept_without_an_epoch_gets_a_fresh_id() {
        let created = kept(pair(NO_PRODUCER_ID, NO_PRODUCER_EPOCH), pair(-1, -1));
        let next = next_epochs(Some(&created), Some(pair(42, 9)), fresh).expect("fresh");
        assert_eq!(next.current, pair(500, 0));
    }

    #[test]
    fn a_restarted_broker_never_reuses_an_id() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = {
            let store = LocalMetadataStore::open(dir.path()).expect("store");
            ProducerIds::default().next(&store).expect("id")
        };
        let store = LocalMetadataStore::open(dir.path()).expect("store");
        let second = ProducerIds::default().next(&store).expect("id");
        assert!(second > first, "{second} after {first}");
    }
}
