//! A durable single-node [`MetadataStore`](crate::MetadataStore): one JSON
//! document replaced atomically (write, fsync, rename, fsync the folder).

/// Placeholder until the store is written.
#[derive(Debug)]
pub struct LocalMetadataStore;
