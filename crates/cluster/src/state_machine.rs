//! The applied metadata, for openraft's `RaftStateMachine`, and its
//! snapshots.
//!
//! Committed entries are applied in memory ([`ClusterState::apply`]); after
//! each batch the change feed (a watch counter holding the last applied
//! index) moves, and brokers read what changed. A snapshot is the whole
//! state as JSON with the Raft position it covers; it is written to
//! `<data dir>/raft/snapshot` (temporary file, fsync, rename) before
//! openraft may purge the log it replaces, and read back at start. A
//! snapshot of a format version this code does not know refuses the start.

use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    BasicNode, Entry, EntryPayload, LogId, RaftSnapshotBuilder, SnapshotMeta, StorageError,
    StoredMembership,
};
use tokio::sync::watch;

use crate::state::{ClusterState, Outcome};
use crate::{ClusterError, TypeConfig, storage_io};

/// The snapshot file's name in the Raft folder.
const SNAPSHOT_FILE: &str = "snapshot";
/// Where a snapshot is written before it replaces the last one.
const SNAPSHOT_TEMP_FILE: &str = "snapshot.tmp";
/// The snapshot format this code writes. Format 2 added the state's
/// `group_configs`, format 3 its `scram_credentials`, format 4 its `acls`
/// and format 5 its `client_quotas`; formats 1 to 4, which have none, are
/// read too. A build that reads only the formats before would drop them,
/// so it refuses a newer snapshot.
const SNAPSHOT_FORMAT_VERSION: u32 = 5;
/// Largest snapshot read from disk or received from a leader.
pub(crate) const SNAPSHOT_BYTES_MAX: u64 = 1 << 30;

/// A snapshot as stored and as sent: its Raft position and the state.
#[derive(serde::Serialize, serde::Deserialize)]
struct SnapshotFile {
    format_version: u32,
    meta: SnapshotMeta<u64, BasicNode>,
    state: ClusterState,
}

/// What has been applied.
pub(crate) struct Applied {
    /// The metadata.
    pub(crate) state: ClusterState,
    last_applied: Option<LogId<u64>>,
    membership: StoredMembership<u64, BasicNode>,
    /// The last snapshot, encoded.
    snapshot: Option<(SnapshotMeta<u64, BasicNode>, Vec<u8>)>,
    snapshots_built: u64,
}

/// openraft's handle on the state machine; clones share it.
#[derive(Clone)]
pub(crate) struct StateMachine {
    dir: PathBuf,
    applied: Arc<RwLock<Applied>>,
    changes: Arc<watch::Sender<u64>>,
}

impl StateMachine {
    /// Open the state machine in `dir`, from its last snapshot if any.
    pub(crate) fn open(dir: &Path) -> Result<Self, ClusterError> {
        let path = dir.join(SNAPSHOT_FILE);
        let _ = std::fs::remove_file(dir.join(SNAPSHOT_TEMP_FILE));
        let mut applied = Applied {
            state: ClusterState::default(),
            last_applied: None,
            membership: StoredMembership::default(),
            snapshot: None,
            snapshots_built: 0,
        };
        match std::fs::read(&path) {
            Ok(bytes) => {
                let file = decode_snapshot(&bytes)
                    .map_err(|why| ClusterError::Storage(format!("{}: {why}", path.display())))?;
                applied.state = file.state;
                applied.last_applied = file.meta.last_log_id;
                applied.membership = file.meta.last_membership.clone();
                applied.snapshot = Some((file.meta, bytes));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(ClusterError::Storage(format!(
                    "cannot read {}: {e}",
                    path.display()
                )));
            }
        }
        let index = applied.last_applied.map_or(0, |l| l.index);
        Ok(Self {
            dir: dir.to_path_buf(),
            applied: Arc::new(RwLock::new(applied)),
            changes: Arc::new(watch::channel(index).0),
        })
    }

    /// Read the applied state.
    pub(crate) fn read<T>(&self, f: impl FnOnce(&ClusterState) -> T) -> Result<T, ClusterError> {
        let applied = weir_sync::read(&self.applied)?;
        Ok(f(&applied.state))
    }

    /// The change feed: the last applied index.
    pub(crate) fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Replace the snapshot file with `bytes` (temporary file, fsync,
    /// rename, folder fsync), on a blocking thread.
    async fn persist_snapshot(&self, bytes: Vec<u8>) -> Result<(), StorageError<u64>> {
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || {
            weir_sync::replace_file(
                &dir.join(SNAPSHOT_TEMP_FILE),
                &dir.join(SNAPSHOT_FILE),
                |mut f| f.write_all(&bytes),
                std::fs::File::sync_data,
            )
        })
        .await
        .map_err(|e| storage_io(e.to_string()))?
        .map_err(storage_io)
    }
}

/// Decode a snapshot, refusing a format version this code does not know.
fn decode_snapshot(bytes: &[u8]) -> Result<SnapshotFile, String> {
    if bytes.len() as u64 > SNAPSHOT_BYTES_MAX {
        return Err(format!("a snapshot larger than {SNAPSHOT_BYTES_MAX} bytes"));
    }
    #[derive(serde::Deserialize)]
    struct Version {
        format_version: u32,
    }
    let version: Version =
        serde_json::from_slice(bytes).map_err(|e| format!("corrupt snapshot: {e}"))?;
    if !(1..=SNAPSHOT_FORMAT_VERSION).contains(&version.format_version) {
        return Err(format!(
            "snapshot format_version {} is not one this Weir reads (1..={SNAPSHOT_FORMAT_VERSION}); \
             it was written by a newer Weir or is damaged",
            version.format_version
        ));
    }
    serde_json::from_slice(bytes).map_err(|e| format!("corrupt snapshot: {e}"))
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<u64>> {
        let (meta, bytes) = {
            let mut applied =
                weir_sync::write(&self.applied).map_err(|e| storage_io(e.to_string()))?;
            applied.snapshots_built += 1;
            let last = applied.last_applied;
            let meta = SnapshotMeta {
                last_log_id: last,
                last_membership: applied.membership.clone(),
                snapshot_id: format!(
                    "{}-{}-{}",
                    last.map_or(0, |l| l.leader_id.term),
                    last.map_or(0, |l| l.index),
                    applied.snapshots_built
                ),
            };
            let bytes = serde_json::to_vec(&SnapshotFile {
                format_version: SNAPSHOT_FORMAT_VERSION,
                meta: meta.clone(),
                state: applied.state.clone(),
            })
            .map_err(|e| storage_io(e.to_string()))?;
            (meta, bytes)
        };
        self.persist_snapshot(bytes.clone()).await?;
        weir_sync::write(&self.applied)
            .map_err(|e| storage_io(e.to_string()))?
            .snapshot = Some((meta.clone(), bytes.clone()));
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<u64>>, StoredMembership<u64, BasicNode>), StorageError<u64>> {
        let applied = weir_sync::read(&self.applied).map_err(|e| storage_io(e.to_string()))?;
        Ok((applied.last_applied, applied.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Outcome>, StorageError<u64>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + openraft::OptionalSend,
        I::IntoIter: openraft::OptionalSend,
    {
        let mut outcomes = Vec::new();
        let last = {
            let mut applied =
                weir_sync::write(&self.applied).map_err(|e| storage_io(e.to_string()))?;
            for entry in entries {
                let outcome = match &entry.payload {
                    EntryPayload::Blank => Outcome::Done,
                    EntryPayload::Normal(command) => {
                        let outcome = applied.state.apply(entry.log_id.index, command);
                        if let Outcome::Refused(why) = &outcome {
                            tracing::debug!(
                                index = entry.log_id.index,
                                ?why,
                                "metadata command refused"
                            );
                        }
                        outcome
                    }
                    EntryPayload::Membership(m) => {
                        applied.membership = StoredMembership::new(Some(entry.log_id), m.clone());
                        Outcome::Done
                    }
                };
                applied.last_applied = Some(entry.log_id);
                outcomes.push(outcome);
            }
            applied.last_applied.map_or(0, |l| l.index)
        };
        self.changes.send_replace(last);
        Ok(outcomes)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<u64>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<u64>> {
        let bytes = snapshot.into_inner();
        let file = decode_snapshot(&bytes).map_err(storage_io)?;
        self.persist_snapshot(bytes.clone()).await?;
        let last = {
            let mut applied =
                weir_sync::write(&self.applied).map_err(|e| storage_io(e.to_string()))?;
            applied.state = file.state;
            applied.last_applied = meta.last_log_id;
            applied.membership = meta.last_membership.clone();
            applied.snapshot = Some((meta.clone(), bytes));
            applied.last_applied.map_or(0, |l| l.index)
        };
        self.changes.send_replace(last);
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<u64>> {
        let applied = weir_sync::read(&self.applied).map_err(|e| storage_io(e.to_string()))?;
        Ok(applied.snapshot.as_ref().map(|(meta, bytes)| Snapshot {
            meta: meta.clone(),
            snapshot: Box::new(Cursor::new(bytes.clone())),
        }))
    }
}
