//! Producer ids for idempotent producers: reserved from the metadata store
//! in blocks, so handing one out is usually a counter increment rather than a
//! durable write. Ids left in a block when the broker stops are skipped, never
//! reused: the store only moves forward.

use std::ops::Range;
use std::sync::{Mutex, PoisonError};

use weir_metadata::{MetadataError, MetadataStore};

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
        let mut block = self.block.lock().unwrap_or_else(PoisonError::into_inner);
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
