//! Producer ids for idempotent producers: reserved from the metadata store
//! in blocks, so handing one out is usually a counter increment rather than a
//! durable write. Ids left in a block when the broker stops are skipped, never
//! reused: the store only moves forward.

use std::ops::Range;
use std::sync::{Arc, Mutex, PoisonError, Weak};

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

/// The allocator serving `store`.
///
/// `Broker` does not hold one yet (its fields belong to `lib.rs`), so the
/// allocators live here, one per metadata store, and go with their store.
pub(crate) fn for_store(store: &Arc<dyn MetadataStore>) -> Arc<ProducerIds> {
    type Registry = Vec<(Weak<dyn MetadataStore>, Arc<ProducerIds>)>;
    static REGISTRY: Mutex<Registry> = Mutex::new(Vec::new());
    let mut registry = REGISTRY.lock().unwrap_or_else(PoisonError::into_inner);
    registry.retain(|(owner, _)| owner.strong_count() > 0);
    let key = Arc::as_ptr(store);
    if let Some((_, ids)) = registry
        .iter()
        .find(|(owner, _)| std::ptr::addr_eq(owner.as_ptr(), key))
    {
        return ids.clone();
    }
    let ids = Arc::new(ProducerIds::default());
    registry.push((Arc::downgrade(store), ids.clone()));
    ids
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

    #[test]
    fn each_store_has_its_own_allocator() {
        let a_dir = tempfile::tempdir().expect("tempdir");
        let b_dir = tempfile::tempdir().expect("tempdir");
        let a: Arc<dyn MetadataStore> =
            Arc::new(LocalMetadataStore::open(a_dir.path()).expect("store"));
        let b: Arc<dyn MetadataStore> =
            Arc::new(LocalMetadataStore::open(b_dir.path()).expect("store"));
        assert!(Arc::ptr_eq(&for_store(&a), &for_store(&a)));
        assert!(!Arc::ptr_eq(&for_store(&a), &for_store(&b)));
    }
}
