//! A durable single-node [`MetadataStore`]: an append-only log of metadata
//! records, `<data dir>/meta/metadata.log`, on top of a periodic snapshot
//! of the whole state, `<data dir>/meta/metadata.snapshot`. Both formats
//! are drawn in `docs/format.md`.
//!
//! A change is validated against the state in memory, becomes one record,
//! and the record is appended to the log and fsync'd before the call
//! returns; only then is it applied in memory. A change therefore costs one
//! small append, not a rewrite of every topic: creating n topics is linear.
//! Once the log outgrows the last snapshot, the state is written to a new
//! snapshot (temp file, fsync, rename, folder fsync) and the log starts
//! over; records carry a sequence number, so records already in the
//! snapshot are skipped if a crash comes between the two steps.
//!
//! At open, a torn last record (a crash during an append) is cut off; any
//! other damage, or a format version or record kind this code does not
//! know, refuses to open with a message naming the file. A data dir from
//! before the log (`metadata.json`, format 1) is read once and turned into
//! the first snapshot. A failed write poisons the store: it refuses further
//! changes until restart, because after a failed fsync the file's state on
//! disk is unknown.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use weir_sync::PoisonedLock;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use uuid::Uuid;

use crate::record_file::RecordFileFormat;
use crate::{ConfigChange, MetadataError, MetadataStore, NewTopic, TopicMeta};

/// The snapshot format this code writes; it reads this one, format 5 (no
/// client quotas), format 4 (no ACLs), format 3 (no SCRAM credentials),
/// format 2 (no group configs) and format 1 (the whole-document
/// `metadata.json` of earlier versions). Format 3 added `group_configs`,
/// format 4 `scram_credentials`, format 5 `acls` and format 6
/// `client_quotas`: a build that reads only the formats before would drop
/// them, so it refuses the file instead.
const FORMAT_VERSION: u32 = 6;
/// Folder under the data dir that holds the metadata.
const META_DIR: &str = "meta";
/// The format-1 document of earlier versions, read once and then removed.
const DOCUMENT_FILE: &str = "metadata.json";
/// Where format 1 wrote its next document; never committed state.
const TEMP_FILE: &str = "metadata.json.tmp";
/// The last snapshot.
const SNAPSHOT_FILE: &str = "metadata.snapshot";
/// Where the next snapshot is written before it is renamed into place.
const SNAPSHOT_TEMP_FILE: &str = "metadata.snapshot.tmp";
/// The record log.
const LOG_FILE: &str = "metadata.log";
/// Where a fresh log is written before it is renamed into place.
const LOG_TEMP_FILE: &str = "metadata.log.tmp";
/// The record log's format: one record is one topic or one config change.
const LOG_FORMAT: RecordFileFormat = RecordFileFormat {
    magic: b"WEIRMLOG",
    version: 1,
    record_bytes_max: 16 << 20,
    file_bytes_max: DOCUMENT_BYTES_MAX,
    what: "metadata log",
};
/// Magic, version, and 4 reserved bytes.
const LOG_HEADER_BYTES: usize = crate::record_file::HEADER_BYTES;
/// Largest snapshot or log read at open, so a damaged or foreign file cannot
/// make the broker allocate without bound.
const DOCUMENT_BYTES_MAX: u64 = 1 << 30;
/// The log is folded into a snapshot once it is larger than both this and
/// the last snapshot, which keeps the work per change constant on average.
#[cfg(not(test))]
const SNAPSHOT_LOG_BYTES_MIN: u64 = 4 << 20;
/// Small in unit tests, so a few dozen changes fold the log.
#[cfg(test)]
const SNAPSHOT_LOG_BYTES_MIN: u64 = 4 << 10;
/// Most producer ids one call may allocate.
const PRODUCER_ID_BLOCK_MAX: i64 = 1 << 20;

/// The state as stored in a snapshot. Its fields are the on-disk format:
/// renaming one breaks every existing data dir, so changes go through
/// `format_version`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Document {
    format_version: u32,
    /// Kafka-style cluster id: a random UUID, base64url without padding.
    cluster_id: String,
    /// By name; stored as a list ordered by name.
    #[serde(with = "topic_list")]
    topics: BTreeMap<String, StoredTopic>,
    /// Broker-level config overrides set at runtime, by Kafka broker config name.
    broker_configs: BTreeMap<String, String>,
    /// The first producer id not yet handed out.
    next_producer_id: i64,
    /// Configs set on groups, by group id (format 3; empty before).
    #[serde(default)]
    group_configs: BTreeMap<String, BTreeMap<String, String>>,
    /// SCRAM credentials, ordered by user then mechanism (format 4; none before).
    #[serde(default)]
    scram_credentials: Vec<crate::ScramCredential>,
    /// ACL bindings, ordered (format 5; none before).
    #[serde(default)]
    acls: Vec<crate::AclEntry>,
    /// The sequence number of the last record that changed `acls` (format
    /// 5; 0 before): their version, as `MetadataStore::acls` answers it.
    #[serde(default)]
    acls_changed_at: u64,
    /// Client quota values, ordered by entity then key (format 6; none before).
    #[serde(default)]
    client_quotas: Vec<crate::ClientQuota>,
    /// The sequence number of the last record that changed `client_quotas`
    /// (format 6; 0 before): their version.
    #[serde(default)]
    client_quotas_changed_at: u64,
    /// The sequence number of the last record the snapshot includes (format 2; 0 in format 1).
    #[serde(default)]
    last_seq: u64,
}

/// The topics of a [`Document`], kept by name in memory (so a change costs
/// a map update, not a shift of every later topic) and stored as a list
/// ordered by name, as format 1 stored them. A name listed twice is damage.
mod topic_list {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    use super::StoredTopic;

    pub(super) fn serialize<S: Serializer>(
        topics: &BTreeMap<String, StoredTopic>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(topics.values())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<BTreeMap<String, StoredTopic>, D::Error> {
        let list = Vec::<StoredTopic>::deserialize(deserializer)?;
        let mut topics = BTreeMap::new();
        for topic in list {
            let name = topic.name.clone();
            if topics.insert(name.clone(), topic).is_some() {
                return Err(D::Error::custom(format!("topic '{name}' is listed twice")));
            }
        }
        Ok(topics)
    }
}

/// A topic as stored; kept apart from [`TopicMeta`] so the public type can
/// change without changing the file format.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct StoredTopic {
    name: String,
    id: Uuid,
    partitions: i32,
    replication_factor: i16,
    configs: BTreeMap<String, String>,
}

/// A config change as stored in a record.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
enum StoredChange {
    Set { key: String, value: String },
    Delete { key: String },
}

/// One change of the metadata state: what the log holds, and what the
/// cluster's openraft state machine will replicate. An unknown `kind` is
/// refused at open.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
enum Record {
    TopicCreated {
        topic: StoredTopic,
    },
    TopicDeleted {
        name: String,
    },
    PartitionCountRaised {
        name: String,
        total: i32,
    },
    TopicConfigsAltered {
        name: String,
        changes: Vec<StoredChange>,
    },
    BrokerConfigsAltered {
        changes: Vec<StoredChange>,
    },
    GroupConfigsAltered {
        group: String,
        changes: Vec<StoredChange>,
    },
    ProducerIdsAllocated {
        next: i64,
    },
    ScramCredentialsAltered {
        changes: Vec<crate::ScramChange>,
    },
    AclsAltered {
        changes: Vec<crate::AclChange>,
    },
    ClientQuotasAltered {
        changes: Vec<crate::ClientQuotaChange>,
    },
}

impl From<&StoredTopic> for TopicMeta {
    fn from(t: &StoredTopic) -> Self {
        TopicMeta {
            name: t.name.clone(),
            id: t.id,
            partitions: t.partitions,
            replication_factor: t.replication_factor,
            configs: t.configs.clone(),
            assignments: Vec::new(),
        }
    }
}

impl From<&StoredChange> for ConfigChange {
    fn from(change: &StoredChange) -> Self {
        match change {
            StoredChange::Set { key, value } => ConfigChange::Set(key.clone(), value.clone()),
            StoredChange::Delete { key } => ConfigChange::Delete(key.clone()),
        }
    }
}

fn stored_changes(changes: &[ConfigChange]) -> Vec<StoredChange> {
    changes
        .iter()
        .map(|c| match c {
            ConfigChange::Set(key, value) => StoredChange::Set {
                key: key.clone(),
                value: value.clone(),
            },
            ConfigChange::Delete(key) => StoredChange::Delete { key: key.clone() },
        })
        .collect()
}

impl Document {
    fn topic(&self, name: &str) -> Result<&StoredTopic, MetadataError> {
        self.topics
            .get(name)
            .ok_or_else(|| MetadataError::UnknownTopic(name.to_string()))
    }

    fn topic_mut(&mut self, name: &str) -> Result<&mut StoredTopic, String> {
        self.topics
            .get_mut(name)
            .ok_or_else(|| format!("topic '{name}' does not exist"))
    }

    /// Apply record `seq`. Records are validated before they are written,
    /// so a failure here means the log disagrees with itself: corruption.
    fn apply(&mut self, seq: u64, record: &Record) -> Result<(), String> {
        match record {
            Record::TopicCreated { topic } => {
                if topic.partitions < 1 || self.topics.values().any(|t| t.id == topic.id) {
                    return Err(format!(
                        "topic '{}' is invalid or its id is taken",
                        topic.name
                    ));
                }
                if self.topics.contains_key(&topic.name) {
                    return Err(format!("topic '{}' created twice", topic.name));
                }
                self.topics.insert(topic.name.clone(), topic.clone());
            }
            Record::TopicDeleted { name } => {
                self.topics
                    .remove(name)
                    .ok_or_else(|| format!("topic '{name}' does not exist"))?;
            }
            Record::PartitionCountRaised { name, total } => {
                let topic = self.topic_mut(name)?;
                if *total <= topic.partitions {
                    return Err(format!(
                        "topic '{name}' cannot shrink to {total} partitions"
                    ));
                }
                topic.partitions = *total;
            }
            Record::TopicConfigsAltered { name, changes } => {
                let topic = self.topic_mut(name)?;
                apply_changes(&mut topic.configs, changes);
            }
            Record::BrokerConfigsAltered { changes } => {
                apply_changes(&mut self.broker_configs, changes);
            }
            Record::GroupConfigsAltered { group, changes } => {
                let changes: Vec<ConfigChange> = changes.iter().map(ConfigChange::from).collect();
                crate::apply_group_changes(&mut self.group_configs, group, &changes)
                    .map_err(|e| e.to_string())?;
            }
            Record::ProducerIdsAllocated { next } => {
                if *next < self.next_producer_id {
                    return Err(format!("producer ids go back to {next}"));
                }
                self.next_producer_id = *next;
            }
            Record::ScramCredentialsAltered { changes } => {
                crate::apply_scram_changes(&mut self.scram_credentials, changes)
                    .map_err(|e| e.to_string())?;
            }
            Record::AclsAltered { changes } => {
                crate::apply_acl_changes(&mut self.acls, changes).map_err(|e| e.to_string())?;
                self.acls_changed_at = seq;
            }
            Record::ClientQuotasAltered { changes } => {
                crate::apply_client_quota_changes(&mut self.client_quotas, changes)
                    .map_err(|e| e.to_string())?;
                self.client_quotas_changed_at = seq;
            }
        }
        Ok(())
    }
}

fn apply_changes(configs: &mut BTreeMap<String, String>, changes: &[StoredChange]) {
    for change in changes {
        match change {
            StoredChange::Set { key, value } => {
                configs.insert(key.clone(), value.clone());
            }
            StoredChange::Delete { key } => {
                configs.remove(key);
            }
        }
    }
}

/// In-memory state: the durable state, the open log, and whether writes are refused.
#[derive(Debug)]
struct State {
    doc: Document,
    /// The log, positioned at its end.
    log: File,
    /// Bytes in the log.
    log_bytes: u64,
    /// Bytes of the last snapshot.
    snapshot_bytes: u64,
    /// Why the store refuses changes, after a write or fsync failed.
    poisoned: Option<String>,
}

/// The local metadata store. Every change holds one lock from validation to
/// fsync, so concurrent calls are serialized.
#[derive(Debug)]
pub struct LocalMetadataStore {
    /// `<data dir>/meta`.
    dir: PathBuf,
    /// Set once when the store is created, and read by every Metadata
    /// request: kept outside `state`, whose lock a commit holds across its
    /// fsync.
    cluster_id: String,
    state: Mutex<State>,
}

impl LocalMetadataStore {
    /// Whether `dir` (a broker's data dir) holds a store: a snapshot, a
    /// record log, or the document of earlier versions. A broker whose
    /// commit log holds partitions but whose store is gone must not start
    /// with a fresh one: it would remove every partition as unreferenced.
    pub fn exists(dir: &Path) -> bool {
        let meta_dir = dir.join(META_DIR);
        [SNAPSHOT_FILE, LOG_FILE, DOCUMENT_FILE]
            .iter()
            .any(|name| meta_dir.join(name).exists())
    }

    /// Open the store under `dir` (the broker's data dir), creating a fresh
    /// one with a new cluster id if none exists.
    pub fn open(dir: &Path) -> Result<Self, MetadataError> {
        let meta_dir = dir.join(META_DIR);
        fs::create_dir_all(&meta_dir).map_err(|e| io_error(&meta_dir, "cannot create", e))?;
        // The folder entry itself must survive a crash, or the first snapshot could vanish.
        weir_sync::sync_dir(dir).map_err(|e| io_error(dir, "cannot fsync", e))?;

        // A temp file was never renamed into place, so it never held committed state.
        for name in [TEMP_FILE, SNAPSHOT_TEMP_FILE, LOG_TEMP_FILE] {
            let temp = meta_dir.join(name);
            match fs::remove_file(&temp) {
                Ok(()) => {
                    tracing::warn!(file = %temp.display(), "discarded an uncommitted metadata write")
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_error(&temp, "cannot remove", e)),
            }
        }

        let snapshot_path = meta_dir.join(SNAPSHOT_FILE);
        let legacy_path = meta_dir.join(DOCUMENT_FILE);
        let (mut doc, snapshot_bytes) = match read_bounded(&snapshot_path) {
            Ok(bytes) => (parse_document(&snapshot_path, &bytes)?, bytes.len() as u64),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let doc = match read_bounded(&legacy_path) {
                    // Format 1: read once, then the snapshot below replaces it.
                    Ok(bytes) => {
                        let doc = parse_document(&legacy_path, &bytes)?;
                        tracing::info!(file = %legacy_path.display(), "moving metadata to the record log");
                        doc
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        let doc = Document {
                            format_version: FORMAT_VERSION,
                            cluster_id: encode_uuid(random_uuid(|_| false)),
                            topics: BTreeMap::new(),
                            broker_configs: BTreeMap::new(),
                            next_producer_id: 0,
                            group_configs: BTreeMap::new(),
                            scram_credentials: Vec::new(),
                            acls: Vec::new(),
                            acls_changed_at: 0,
                            client_quotas: Vec::new(),
                            client_quotas_changed_at: 0,
                            last_seq: 0,
                        };
                        tracing::info!(cluster_id = %doc.cluster_id, "created cluster metadata");
                        doc
                    }
                    Err(e) => return Err(io_error(&legacy_path, "cannot read", e)),
                };
                let bytes = write_snapshot(&meta_dir, &doc)?;
                (doc, bytes)
            }
            Err(e) => return Err(io_error(&snapshot_path, "cannot read", e)),
        };
        // Its content is in the snapshot now, which is durable.
        match fs::remove_file(&legacy_path) {
            Ok(()) => weir_sync::sync_dir(&meta_dir)
                .map_err(|e| io_error(&meta_dir, "cannot fsync", e))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error(&legacy_path, "cannot remove", e)),
        }

        let log_path = meta_dir.join(LOG_FILE);
        if !log_path.exists() {
            write_empty_log(&meta_dir)?;
        }
        let log_bytes = replay_log(&log_path, &mut doc)?;
        let log = OpenOptions::new()
            .append(true)
            .open(&log_path)
            .map_err(|e| io_error(&log_path, "cannot open", e))?;
        Ok(Self {
            dir: meta_dir,
            cluster_id: doc.cluster_id.clone(),
            state: Mutex::new(State {
                doc,
                log,
                log_bytes,
                snapshot_bytes,
                poisoned: None,
            }),
        })
    }

    /// The state, unless a panic poisoned its lock: a change may then have
    /// been applied halfway (memory changes after the durable write).
    fn lock(&self) -> Result<MutexGuard<'_, State>, PoisonedLock> {
        weir_sync::lock(&self.state)
    }

    /// The state for a reader that has no error to return: a poisoned lock
    /// raises the panic again rather than be read past.
    fn lock_for_read(&self) -> MutexGuard<'_, State> {
        self.lock().unwrap_or_else(PoisonedLock::reraise)
    }

    /// Turn a change into a record against the current state, append the
    /// record durably, and only then apply it. Returns what `change` returned.
    fn commit<T>(
        &self,
        change: impl FnOnce(&Document) -> Result<(Record, T), MetadataError>,
    ) -> Result<T, MetadataError> {
        let mut state = self.lock()?;
        if let Some(reason) = &state.poisoned {
            return Err(MetadataError::Storage(format!(
                "metadata store refuses changes after an earlier write failure: {reason}"
            )));
        }
        let (record, out) = change(&state.doc)?;
        let seq = state.doc.last_seq + 1;
        if let Err(err) = self.append(&mut state, seq, &record) {
            state.poisoned = Some(err.to_string());
            return Err(err);
        }
        // The record was checked against this very state before it was
        // written, so it must apply. If it does not, memory and the log
        // disagree: stop every later change rather than carry on.
        if let Err(why) = state.doc.apply(seq, &record) {
            let reason = format!("metadata record {seq} was written but does not apply: {why}");
            tracing::error!("{reason}");
            state.poisoned = Some(reason.clone());
            return Err(MetadataError::Storage(reason));
        }
        state.doc.last_seq = seq;
        if state.log_bytes > SNAPSHOT_LOG_BYTES_MIN.max(state.snapshot_bytes)
            && let Err(err) = self.fold_log(&mut state)
        {
            // The change itself is durable in the log, so it is answered as
            // done; after a failed write the files' state is unknown, so
            // later changes are refused.
            tracing::error!(error = %err, "cannot fold the metadata log into a snapshot");
            state.poisoned = Some(err.to_string());
        }
        Ok(out)
    }

    fn append(&self, state: &mut State, seq: u64, record: &Record) -> Result<(), MetadataError> {
        let path = self.dir.join(LOG_FILE);
        let frame = encode_frame(seq, record)
            .map_err(|e| MetadataError::Storage(format!("cannot encode a metadata record: {e}")))?;
        state
            .log
            .write_all(&frame)
            .and_then(|()| state.log.sync_data())
            .map_err(|e| io_error(&path, "cannot append to", e))?;
        state.log_bytes += frame.len() as u64;
        Ok(())
    }

    /// Write the state as a snapshot, then start an empty log.
    fn fold_log(&self, state: &mut State) -> Result<(), MetadataError> {
        state.snapshot_bytes = write_snapshot(&self.dir, &state.doc)?;
        write_empty_log(&self.dir)?;
        let path = self.dir.join(LOG_FILE);
        state.log = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(|e| io_error(&path, "cannot open", e))?;
        state.log_bytes = LOG_HEADER_BYTES as u64;
        Ok(())
    }
}

impl MetadataStore for LocalMetadataStore {
    fn cluster_id(&self) -> String {
        self.cluster_id.clone()
    }

    fn topics(&self) -> Vec<TopicMeta> {
        self.lock_for_read()
            .doc
            .topics
            .values()
            .map(TopicMeta::from)
            .collect()
    }

    fn topic(&self, name: &str) -> Option<TopicMeta> {
        let state = self.lock_for_read();
        state.doc.topics.get(name).map(TopicMeta::from)
    }

    fn topic_by_id(&self, id: Uuid) -> Option<TopicMeta> {
        let state = self.lock_for_read();
        state
            .doc
            .topics
            .values()
            .find(|t| t.id == id)
            .map(TopicMeta::from)
    }

    fn create_topic(&self, topic: NewTopic) -> Result<TopicMeta, MetadataError> {
        if topic.partitions < 1 {
            return Err(MetadataError::InvalidPartitions(format!(
                "a topic needs at least 1 partition, not {}",
                topic.partitions
            )));
        }
        self.commit(|doc| {
            if doc.topics.contains_key(&topic.name) {
                return Err(MetadataError::TopicAlreadyExists(topic.name.clone()));
            }
            if topic.id.is_nil() || doc.topics.values().any(|t| t.id == topic.id) {
                return Err(MetadataError::TopicIdTaken(topic.id));
            }
            let stored = StoredTopic {
                name: topic.name.clone(),
                id: topic.id,
                partitions: topic.partitions,
                replication_factor: topic.replication_factor,
                configs: topic.configs.clone(),
            };
            let meta = TopicMeta::from(&stored);
            Ok((Record::TopicCreated { topic: stored }, meta))
        })
    }

    fn delete_topic(&self, name: &str) -> Result<TopicMeta, MetadataError> {
        self.commit(|doc| {
            let meta = TopicMeta::from(doc.topic(name)?);
            Ok((
                Record::TopicDeleted {
                    name: name.to_string(),
                },
                meta,
            ))
        })
    }

    fn set_partition_count(&self, name: &str, total: i32) -> Result<TopicMeta, MetadataError> {
        self.commit(|doc| {
            let topic = doc.topic(name)?;
            if total <= topic.partitions {
                return Err(MetadataError::InvalidPartitions(format!(
                    "topic '{name}' has {} partitions; the new total {total} must be larger",
                    topic.partitions
                )));
            }
            let mut meta = TopicMeta::from(topic);
            meta.partitions = total;
            let record = Record::PartitionCountRaised {
                name: name.to_string(),
                total,
            };
            Ok((record, meta))
        })
    }

    fn alter_topic_configs(
        &self,
        name: &str,
        changes: &[ConfigChange],
    ) -> Result<TopicMeta, MetadataError> {
        self.commit(|doc| {
            let topic = doc.topic(name)?;
            let changes = stored_changes(changes);
            let mut meta = TopicMeta::from(topic);
            apply_changes(&mut meta.configs, &changes);
            let record = Record::TopicConfigsAltered {
                name: name.to_string(),
                changes,
            };
            Ok((record, meta))
        })
    }

    fn broker_configs(&self) -> BTreeMap<String, String> {
        self.lock_for_read().doc.broker_configs.clone()
    }

    fn alter_broker_configs(&self, changes: &[ConfigChange]) -> Result<(), MetadataError> {
        self.commit(|_| {
            let changes = stored_changes(changes);
            Ok((Record::BrokerConfigsAltered { changes }, ()))
        })
    }

    fn group_configs(&self, group: &str) -> BTreeMap<String, String> {
        self.lock_for_read()
            .doc
            .group_configs
            .get(group)
            .cloned()
            .unwrap_or_default()
    }

    fn alter_group_configs(
        &self,
        group: &str,
        changes: &[ConfigChange],
    ) -> Result<(), MetadataError> {
        self.commit(|doc| {
            // Checked first, so a refused change writes no record.
            crate::group_configs_after(&doc.group_configs, group, changes)?;
            let record = Record::GroupConfigsAltered {
                group: group.to_string(),
                changes: stored_changes(changes),
            };
            Ok((record, ()))
        })
    }

    fn allocate_producer_ids(&self, count: i64) -> Result<i64, MetadataError> {
        if !(1..=PRODUCER_ID_BLOCK_MAX).contains(&count) {
            return Err(MetadataError::Storage(format!(
                "cannot allocate {count} producer ids at once (1..={PRODUCER_ID_BLOCK_MAX})"
            )));
        }
        self.commit(|doc| {
            let first = doc.next_producer_id;
            let next = first
                .checked_add(count)
                .ok_or_else(|| MetadataError::Storage("producer ids are exhausted".into()))?;
            Ok((Record::ProducerIdsAllocated { next }, first))
        })
    }

    fn scram_credentials(&self) -> Vec<crate::ScramCredential> {
        self.lock_for_read().doc.scram_credentials.clone()
    }

    fn alter_scram_credentials(&self, changes: &[crate::ScramChange]) -> Result<(), MetadataError> {
        self.commit(|doc| {
            // Checked first, so a refused change writes no record.
            crate::apply_scram_changes(&mut doc.scram_credentials.clone(), changes)?;
            let record = Record::ScramCredentialsAltered {
                changes: changes.to_vec(),
            };
            Ok((record, ()))
        })
    }

    fn acls(&self) -> (u64, Vec<crate::AclEntry>) {
        let state = self.lock_for_read();
        (state.doc.acls_changed_at, state.doc.acls.clone())
    }

    fn acls_version(&self) -> u64 {
        self.lock_for_read().doc.acls_changed_at
    }

    fn alter_acls(&self, changes: &[crate::AclChange]) -> Result<(), MetadataError> {
        self.commit(|doc| {
            // Checked first, so a refused change writes no record.
            crate::apply_acl_changes(&mut doc.acls.clone(), changes)?;
            let record = Record::AclsAltered {
                changes: changes.to_vec(),
            };
            Ok((record, ()))
        })
    }

    fn client_quotas(&self) -> (u64, Vec<crate::ClientQuota>) {
        let state = self.lock_for_read();
        (
            state.doc.client_quotas_changed_at,
            state.doc.client_quotas.clone(),
        )
    }

    fn client_quotas_version(&self) -> u64 {
        self.lock_for_read().doc.client_quotas_changed_at
    }

    fn alter_client_quotas(
        &self,
        changes: &[crate::ClientQuotaChange],
    ) -> Result<(), MetadataError> {
        self.commit(|doc| {
            // Checked first, so a refused change writes no record.
            crate::apply_client_quota_changes(&mut doc.client_quotas.clone(), changes)?;
            let record = Record::ClientQuotasAltered {
                changes: changes.to_vec(),
            };
            Ok((record, ()))
        })
    }

    /// The sequence number of the last record: one per change since the
    /// store was created (a data dir from before the record log counts
    /// from its conversion).
    fn change_count(&self) -> Option<u64> {
        Some(self.lock_for_read().doc.last_seq)
    }
}

/// Kafka's textual form of a UUID: 16 bytes in base64url without padding (22 characters).
pub(crate) fn encode_uuid(id: Uuid) -> String {
    URL_SAFE_NO_PAD.encode(id.as_bytes())
}

/// A random UUID that is not nil, not `taken`, and whose text does not start
/// with '-' (Kafka avoids those so they never read as a command-line flag).
pub(crate) fn random_uuid(taken: impl Fn(Uuid) -> bool) -> Uuid {
    loop {
        let id = Uuid::new_v4();
        if !id.is_nil() && !taken(id) && !encode_uuid(id).starts_with('-') {
            return id;
        }
    }
}

fn read_bounded(path: &Path) -> io::Result<Vec<u8>> {
    let file = File::open(path)?;
    let mut bytes = Vec::new();
    file.take(DOCUMENT_BYTES_MAX + 1).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Parse and check a stored snapshot (format 2) or document (format 1);
/// every failure names the file.
fn parse_document(path: &Path, bytes: &[u8]) -> Result<Document, MetadataError> {
    let corrupt = |detail: String| {
        MetadataError::Storage(format!(
            "corrupt metadata file {}: {detail}",
            path.display()
        ))
    };
    if bytes.len() as u64 > DOCUMENT_BYTES_MAX {
        return Err(corrupt(format!("larger than {DOCUMENT_BYTES_MAX} bytes")));
    }
    // Read the version first, so a newer format is reported as such rather
    // than as whatever field it renamed.
    #[derive(serde::Deserialize)]
    struct Version {
        format_version: u32,
    }
    let version: Version = serde_json::from_slice(bytes).map_err(|e| corrupt(e.to_string()))?;
    if version.format_version == 0 || version.format_version > FORMAT_VERSION {
        return Err(corrupt(format!(
            "format_version {} is not one this Weir reads (1..={FORMAT_VERSION}); \
             it was written by a newer Weir or is damaged",
            version.format_version
        )));
    }
    let mut doc: Document = serde_json::from_slice(bytes).map_err(|e| corrupt(e.to_string()))?;
    if doc.cluster_id.is_empty() {
        return Err(corrupt("empty cluster_id".into()));
    }
    if doc.next_producer_id < 0 {
        return Err(corrupt(format!(
            "negative next_producer_id {}",
            doc.next_producer_id
        )));
    }
    let mut ids = std::collections::HashSet::new();
    for topic in doc.topics.values() {
        if topic.partitions < 1 {
            return Err(corrupt(format!(
                "topic '{}' has {} partitions",
                topic.name, topic.partitions
            )));
        }
        if !ids.insert(topic.id) {
            return Err(corrupt(format!(
                "topic '{}' shares its name or id with another",
                topic.name
            )));
        }
    }
    // Format 1 is upgraded in memory; the next snapshot writes the current one.
    doc.format_version = FORMAT_VERSION;
    Ok(doc)
}

/// Write `doc` as the snapshot (temp file, fsync, rename, folder fsync);
/// returns its size.
fn write_snapshot(dir: &Path, doc: &Document) -> Result<u64, MetadataError> {
    let temp = dir.join(SNAPSHOT_TEMP_FILE);
    let path = dir.join(SNAPSHOT_FILE);
    let mut bytes = serde_json::to_vec(doc).map_err(|e| {
        MetadataError::Storage(format!(
            "cannot encode metadata for {}: {e}",
            path.display()
        ))
    })?;
    bytes.push(b'\n');
    replace_file(&temp, &path, &bytes)?;
    Ok(bytes.len() as u64)
}

/// Replace the log with one that holds only its header.
fn write_empty_log(dir: &Path) -> Result<(), MetadataError> {
    replace_file(
        &dir.join(LOG_TEMP_FILE),
        &dir.join(LOG_FILE),
        &LOG_FORMAT.header(),
    )
}

fn replace_file(temp: &Path, path: &Path, bytes: &[u8]) -> Result<(), MetadataError> {
    weir_sync::replace_file(temp, path, |mut f| f.write_all(bytes), File::sync_all)
        .map_err(|e| MetadataError::Storage(e.to_string()))
}

fn encode_frame(seq: u64, record: &Record) -> Result<Vec<u8>, String> {
    let payload = serde_json::to_vec(record).map_err(|e| e.to_string())?;
    LOG_FORMAT.encode(seq, &payload)
}

/// Apply the log's records after the snapshot to `doc`, cutting a torn last
/// record; returns the log's size afterwards.
fn replay_log(path: &Path, doc: &mut Document) -> Result<u64, MetadataError> {
    let corrupt = |at: u64, detail: String| {
        MetadataError::Storage(format!(
            "corrupt metadata log {} at byte {at}: {detail}",
            path.display()
        ))
    };
    let (frames, len) = LOG_FORMAT.read(path)?;
    let snapshot_seq = doc.last_seq;
    for frame in frames.into_iter().filter(|f| f.seq > snapshot_seq) {
        if frame.seq != doc.last_seq + 1 {
            return Err(corrupt(
                frame.offset,
                format!("record {} follows record {}", frame.seq, doc.last_seq),
            ));
        }
        let record: Record = serde_json::from_slice(&frame.payload).map_err(|e| {
            corrupt(
                frame.offset,
                format!("a record this Weir cannot read (unknown kind or field?): {e}"),
            )
        })?;
        doc.apply(frame.seq, &record)
            .map_err(|e| corrupt(frame.offset, e))?;
        doc.last_seq = frame.seq;
    }
    Ok(len)
}

fn io_error(path: &Path, what: &str, err: io::Error) -> MetadataError {
    MetadataError::Storage(format!("{what} {}: {err}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record_file::FRAME_HEADER_BYTES;

    fn new_topic(name: &str, partitions: i32) -> NewTopic {
        NewTopic {
            name: name.to_string(),
            id: Uuid::new_v4(),
            partitions,
            replication_factor: 1,
            configs: BTreeMap::from([("retention.ms".to_string(), "1000".to_string())]),
            assignments: None,
        }
    }

    fn set(key: &str, value: &str) -> ConfigChange {
        ConfigChange::Set(key.to_string(), value.to_string())
    }

    #[test]
    fn a_lock_poisoned_by_a_panic_refuses_changes_and_is_never_read_past() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalMetadataStore::open(dir.path()).unwrap();
        store.create_topic(new_topic("before", 1)).unwrap();
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _state = store.lock().unwrap();
            panic!("a change applied halfway");
        }));
        assert!(panicked.is_err());
        assert!(matches!(
            store.create_topic(new_topic("after", 1)),
            Err(MetadataError::Storage(reason)) if reason.contains("panicked while holding the lock")
        ));
        let read = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| store.topics()));
        assert!(read.is_err(), "a reader raises the panic again");
        // Nothing was changed on disk: a reopen serves the topic made before.
        drop(store);
        let store = LocalMetadataStore::open(dir.path()).unwrap();
        let names: Vec<String> = store.topics().into_iter().map(|t| t.name).collect();
        assert_eq!(names, ["before"]);
    }

    #[test]
    fn cluster_id_is_kafka_style_and_stable_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let id = LocalMetadataStore::open(dir.path()).unwrap().cluster_id();
        assert_eq!(id.len(), 22, "{id}");
        assert!(
            id.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "{id}"
        );
        assert!(!id.starts_with('-'));
        assert_eq!(
            LocalMetadataStore::open(dir.path()).unwrap().cluster_id(),
            id
        );
    }

    #[test]
    fn change_count_counts_committed_changes_across_folds_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalMetadataStore::open(dir.path()).unwrap();
        assert_eq!(store.change_count(), Some(0));
        store.create_topic(new_topic("orders", 3)).unwrap();
        assert!(store.create_topic(new_topic("orders", 3)).is_err());
        assert_eq!(store.change_count(), Some(1));
        // Enough changes to fold the log into a snapshot at least once.
        for i in 0..100 {
            store
                .alter_broker_configs(&[set("log.retention.ms", &i.to_string())])
                .unwrap();
        }
        assert_eq!(store.change_count(), Some(101));
        drop(store);
        let store = LocalMetadataStore::open(dir.path()).unwrap();
        assert_eq!(store.change_count(), Some(101));
    }

    #[test]
    fn create_delete_and_alter_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalMetadataStore::open(dir.path()).unwrap();
        let orders = store.create_topic(new_topic("orders", 3)).unwrap();
        store.create_topic(new_topic("gone", 1)).unwrap();
        store.create_topic(new_topic("audit", 2)).unwrap();
        store.delete_topic("gone").unwrap();
        store.set_partition_count("orders", 5).unwrap();
        store
            .alter_topic_configs(
                "orders",
                &[
                    set("cleanup.policy", "compact"),
                    ConfigChange::Delete("retention.ms".into()),
                ],
            )
            .unwrap();
        store
            .alter_broker_configs(&[set("log.retention.ms", "5000")])
            .unwrap();
        drop(store);

        let store = LocalMetadataStore::open(dir.path()).unwrap();
        let names: Vec<String> = store.topics().into_iter().map(|t| t.name).collect();
        assert_eq!(names, ["audit", "orders"]);
        let reopened = store.topic("orders").unwrap();
        assert_eq!(reopened.id, orders.id);
        assert_eq!(reopened.partitions, 5);
        assert_eq!(
            reopened.configs,
            BTreeMap::from([("cleanup.policy".to_string(), "compact".to_string())])
        );
        assert_eq!(store.topic_by_id(orders.id).unwrap().name, "orders");
        assert!(store.topic("gone").is_none());
        assert_eq!(
            store
                .broker_configs()
                .get("log.retention.ms")
                .map(String::as_str),
            Some("5000")
        );
    }

    #[test]
    fn refused_changes_leave_the_store_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalMetadataStore::open(dir.path()).unwrap();
        store.create_topic(new_topic("orders", 3)).unwrap();
        assert!(matches!(
            store.create_topic(new_topic("orders", 9)),
            Err(MetadataError::TopicAlreadyExists(_))
        ));
        assert!(matches!(
            store.set_partition_count("orders", 3),
            Err(MetadataError::InvalidPartitions(_))
        ));
        assert!(matches!(
            store.create_topic(new_topic("empty", 0)),
            Err(MetadataError::InvalidPartitions(_))
        ));
        assert!(matches!(
            store.delete_topic("missing"),
            Err(MetadataError::UnknownTopic(_))
        ));
        drop(store);
        let store = LocalMetadataStore::open(dir.path()).unwrap();
        assert_eq!(store.topics().len(), 1);
        assert_eq!(store.topic("orders").unwrap().partitions, 3);
    }

    #[test]
    fn producer_ids_never_repeat_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut seen = Vec::new();
        for _ in 0..3 {
            let store = LocalMetadataStore::open(dir.path()).unwrap();
            for count in [1, 10] {
                let first = store.allocate_producer_ids(count).unwrap();
                seen.extend(first..first + count);
            }
        }
        let mut unique = seen.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), seen.len(), "{seen:?}");
        let store = LocalMetadataStore::open(dir.path()).unwrap();
        assert!(store.allocate_producer_ids(0).is_err());
        assert!(store.allocate_producer_ids(-5).is_err());
    }

    #[test]
    fn torn_temp_file_left_behind_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalMetadataStore::open(dir.path()).unwrap();
        store.create_topic(new_topic("orders", 2)).unwrap();
        drop(store);
        let temp = dir.path().join(META_DIR).join(TEMP_FILE);
        fs::write(&temp, b"{\"format_version\": 1, \"cluster_id\": \"tor").unwrap();

        let store = LocalMetadataStore::open(dir.path()).unwrap();
        assert_eq!(store.topic("orders").unwrap().partitions, 2);
        assert!(!temp.exists());
        store.create_topic(new_topic("after", 1)).unwrap();
    }

    #[test]
    fn corrupt_document_is_an_error_naming_the_file() {
        let bad: [&[u8]; 6] = [
            b"",
            b"\xff\x00garbage",
            b"{\"format_version\": 1, \"cluster_id\": \"abc\"",
            b"{\"format_version\": 99, \"cluster_id\": \"abc\"}",
            br#"{"format_version":1,"cluster_id":"x","topics":[{"name":"a","id":"00000000-0000-0000-0000-000000000001","partitions":0,"replication_factor":1,"configs":{}}],"broker_configs":{},"next_producer_id":0}"#,
            br#"{"format_version":1,"cluster_id":"x","topics":[],"broker_configs":{},"next_producer_id":-1}"#,
        ];
        for bytes in bad {
            let dir = tempfile::tempdir().unwrap();
            fs::create_dir_all(dir.path().join(META_DIR)).unwrap();
            fs::write(dir.path().join(META_DIR).join(DOCUMENT_FILE), bytes).unwrap();
            let err = LocalMetadataStore::open(dir.path()).unwrap_err();
            assert!(
                matches!(&err, MetadataError::Storage(msg) if msg.contains(DOCUMENT_FILE)),
                "{err}"
            );
        }
    }

    #[test]
    fn concurrent_changes_are_serialized_and_all_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(LocalMetadataStore::open(dir.path()).unwrap());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let store = store.clone();
                std::thread::spawn(move || {
                    let mut ids = Vec::new();
                    for i in 0..5 {
                        store
                            .create_topic(new_topic(&format!("t{t}-{i}"), 1))
                            .unwrap();
                        ids.push(store.allocate_producer_ids(1).unwrap());
                    }
                    ids
                })
            })
            .collect();
        let mut ids: Vec<i64> = threads
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        ids.sort_unstable();
        assert_eq!(ids, (0..20).collect::<Vec<_>>());
        drop(store);
        let store = LocalMetadataStore::open(dir.path()).unwrap();
        assert_eq!(store.topics().len(), 20);
        assert_eq!(store.allocate_producer_ids(1).unwrap(), 20);
    }

    fn log_path(dir: &Path) -> PathBuf {
        dir.join(META_DIR).join(LOG_FILE)
    }

    #[test]
    fn each_change_appends_one_record_and_the_log_folds_into_snapshots() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalMetadataStore::open(dir.path()).unwrap();
        let mut sizes = Vec::new();
        for i in 0..200 {
            store
                .create_topic(new_topic(&format!("t{i:03}"), 1))
                .unwrap();
            store
                .alter_topic_configs(&format!("t{i:03}"), &[set("retention.ms", &i.to_string())])
                .unwrap();
            let snapshot = fs::metadata(dir.path().join(META_DIR).join(SNAPSHOT_FILE)).unwrap();
            sizes.push((
                fs::metadata(log_path(dir.path())).unwrap().len(),
                snapshot.len(),
            ));
        }
        // The log grows by one small record per change and is folded once it
        // outgrows the snapshot, instead of rewriting every topic each time.
        for &(log, snapshot) in &sizes {
            assert!(
                log <= SNAPSHOT_LOG_BYTES_MIN.max(snapshot) + 1024,
                "{sizes:?}"
            );
        }
        assert!(
            sizes.windows(2).any(|w| w[1].0 < w[0].0),
            "the log never folded"
        );
        drop(store);
        let store = LocalMetadataStore::open(dir.path()).unwrap();
        assert_eq!(store.topics().len(), 200);
        assert_eq!(
            store
                .topic("t199")
                .unwrap()
                .configs
                .get("retention.ms")
                .map(String::as_str),
            Some("199")
        );
    }

    #[test]
    fn a_torn_last_record_is_cut_and_earlier_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalMetadataStore::open(dir.path()).unwrap();
        store.create_topic(new_topic("kept", 1)).unwrap();
        drop(store);
        let path = log_path(dir.path());
        let whole = fs::read(&path).unwrap();
        let mut frame = encode_frame(
            2,
            &Record::TopicDeleted {
                name: "kept".into(),
            },
        )
        .unwrap();
        for cut in [1, FRAME_HEADER_BYTES, frame.len() - 1] {
            let mut torn = whole.clone();
            torn.extend_from_slice(&frame[..cut]);
            fs::write(&path, &torn).unwrap();
            let store = LocalMetadataStore::open(dir.path()).unwrap();
            assert!(store.topic("kept").is_some(), "cut at {cut}");
            assert_eq!(fs::metadata(&path).unwrap().len(), whole.len() as u64);
        }
        // A whole last record with a bad CRC is a torn write too.
        let last = frame.len() - 1;
        frame[last] ^= 0xff;
        let mut torn = whole.clone();
        torn.extend_from_slice(&frame);
        fs::write(&path, &torn).unwrap();
        assert!(
            LocalMetadataStore::open(dir.path())
                .unwrap()
                .topic("kept")
                .is_some()
        );
    }

    #[test]
    fn damage_unknown_versions_and_unknown_record_kinds_refuse_to_open() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalMetadataStore::open(dir.path()).unwrap();
        store.create_topic(new_topic("a", 1)).unwrap();
        store.create_topic(new_topic("b", 1)).unwrap();
        drop(store);
        let path = log_path(dir.path());
        let good = fs::read(&path).unwrap();

        let mut damaged = good.clone();
        damaged[LOG_HEADER_BYTES + FRAME_HEADER_BYTES + 2] ^= 0x01;
        let mut newer = good.clone();
        newer[8..12].copy_from_slice(&2u32.to_be_bytes());
        let mut unknown_kind = good.clone();
        let payload = br#"{"kind":"timer_armed","at":5}"#;
        let mut covered = 3u64.to_be_bytes().to_vec();
        covered.extend_from_slice(payload);
        unknown_kind.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        unknown_kind.extend_from_slice(&crc32c::crc32c(&covered).to_be_bytes());
        unknown_kind.extend_from_slice(&covered);
        for (what, bytes) in [
            ("damaged", damaged),
            ("newer", newer),
            ("kind", unknown_kind),
        ] {
            fs::write(&path, &bytes).unwrap();
            let err = LocalMetadataStore::open(dir.path()).unwrap_err();
            assert!(
                matches!(&err, MetadataError::Storage(m) if m.contains(LOG_FILE)),
                "{what}: {err}"
            );
            assert_eq!(fs::read(&path).unwrap(), bytes, "{what}: never repaired");
        }
    }

    #[test]
    fn records_already_in_the_snapshot_are_not_applied_twice() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalMetadataStore::open(dir.path()).unwrap();
        store.create_topic(new_topic("once", 1)).unwrap();
        store.allocate_producer_ids(5).unwrap();
        // A crash after the snapshot was renamed into place but before the
        // log was emptied: the snapshot holds the log's records.
        let state = store.lock().unwrap();
        write_snapshot(&store.dir, &state.doc).unwrap();
        drop(state);
        drop(store);
        let store = LocalMetadataStore::open(dir.path()).unwrap();
        assert_eq!(store.topics().len(), 1);
        assert_eq!(store.allocate_producer_ids(1).unwrap(), 5);
    }

    #[test]
    fn group_configs_survive_reopen_from_the_log_and_from_a_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalMetadataStore::open(dir.path()).unwrap();
        let set = |k: &str, v: &str| ConfigChange::Set(k.into(), v.into());
        store
            .alter_group_configs(
                "workers",
                &[
                    set("share.delivery.count.limit", "3"),
                    set("share.auto.offset.reset", "earliest"),
                ],
            )
            .unwrap();
        store
            .alter_group_configs(
                "workers",
                &[ConfigChange::Delete("share.auto.offset.reset".into())],
            )
            .unwrap();
        store
            .alter_group_configs("gone", &[set("share.delivery.count.limit", "4")])
            .unwrap();
        store
            .alter_group_configs(
                "gone",
                &[ConfigChange::Delete("share.delivery.count.limit".into())],
            )
            .unwrap();
        let want = BTreeMap::from([("share.delivery.count.limit".to_string(), "3".to_string())]);
        drop(store);
        // From the log.
        let store = LocalMetadataStore::open(dir.path()).unwrap();
        assert_eq!(store.group_configs("workers"), want);
        assert!(store.group_configs("gone").is_empty());
        assert!(!store.lock().unwrap().doc.group_configs.contains_key("gone"));
        // From a snapshot (this format).
        let state = store.lock().unwrap();
        write_snapshot(&store.dir, &state.doc).unwrap();
        drop(state);
        write_empty_log(&store.dir).unwrap();
        drop(store);
        let snapshot = fs::read(dir.path().join(META_DIR).join(SNAPSHOT_FILE)).unwrap();
        let snapshot: serde_json::Value = serde_json::from_slice(&snapshot).unwrap();
        assert_eq!(snapshot["format_version"], FORMAT_VERSION);
        let store = LocalMetadataStore::open(dir.path()).unwrap();
        assert_eq!(store.group_configs("workers"), want);
    }

    #[test]
    fn scram_credentials_survive_reopen_from_the_log_and_from_a_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalMetadataStore::open(dir.path()).unwrap();
        let credential = |user: &str, mechanism: i8, key: u8| crate::ScramCredential {
            user: user.into(),
            mechanism,
            salt: vec![key; 16],
            stored_key: vec![key; 32],
            server_key: vec![key.wrapping_add(1); 32],
            iterations: 4096,
        };
        store
            .alter_scram_credentials(&[
                crate::ScramChange::Upsert(credential("bob", 2, 1)),
                crate::ScramChange::Upsert(credential("alice", 1, 2)),
                crate::ScramChange::Upsert(credential("alice", 2, 3)),
            ])
            .unwrap();
        store
            .alter_scram_credentials(&[
                crate::ScramChange::Upsert(credential("bob", 2, 4)),
                crate::ScramChange::Delete {
                    user: "alice".into(),
                    mechanism: 1,
                },
            ])
            .unwrap();
        let want = vec![credential("alice", 2, 3), credential("bob", 2, 4)];
        assert_eq!(store.scram_credentials(), want);
        drop(store);
        let store = LocalMetadataStore::open(dir.path()).unwrap();
        assert_eq!(store.scram_credentials(), want, "from the log");
        let state = store.lock().unwrap();
        write_snapshot(&store.dir, &state.doc).unwrap();
        drop(state);
        write_empty_log(&store.dir).unwrap();
        drop(store);
        let snapshot = fs::read_to_string(dir.path().join(META_DIR).join(SNAPSHOT_FILE)).unwrap();
        assert!(
            !snapshot.contains("[4,4"),
            "keys are stored as base64 text: {snapshot}"
        );
        let store = LocalMetadataStore::open(dir.path()).unwrap();
        assert_eq!(store.scram_credentials(), want, "from a snapshot");
        // The Debug form of a credential shows no key.
        assert!(!format!("{:?}", want[0]).contains("stored_key"));
    }

    #[test]
    fn group_configs_are_bounded_in_groups_and_a_refusal_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalMetadataStore::open(dir.path()).unwrap();
        let set = [ConfigChange::Set(
            "share.delivery.count.limit".into(),
            "3".into(),
        )];
        {
            let mut state = store.lock().unwrap();
            for i in 0..crate::GROUP_CONFIGS_MAX {
                state
                    .doc
                    .group_configs
                    .insert(format!("g{i}"), BTreeMap::from([("k".into(), "v".into())]));
            }
        }
        let before = store.change_count();
        assert!(matches!(
            store.alter_group_configs("one-too-many", &set),
            Err(MetadataError::TooManyGroupConfigs(_))
        ));
        assert_eq!(store.change_count(), before);
        // A group that has configs may still change them.
        store.alter_group_configs("g7", &set).unwrap();
    }

    #[test]
    fn committed_v2_fixture_of_snapshot_and_log_still_loads() {
        let (_dir, store) = open_fixture("meta-v2");
        assert_eq!(store.cluster_id(), "q1Sh-9_ISia_zwGINzRvyQ");
        let names: Vec<String> = store.topics().into_iter().map(|t| t.name).collect();
        assert_eq!(names, ["orders"]);
        let orders = store.topic("orders").unwrap();
        assert_eq!(
            orders.id,
            Uuid::parse_str("6f1c2a8e-3b4d-4e5f-8a9b-0c1d2e3f4a5b").unwrap()
        );
        assert_eq!(orders.partitions, 6);
        assert_eq!(
            orders.configs,
            BTreeMap::from([("cleanup.policy".to_string(), "compact".to_string())])
        );
        assert_eq!(
            store
                .broker_configs()
                .get("log.retention.ms")
                .map(String::as_str),
            Some("3600000")
        );
        assert_eq!(store.allocate_producer_ids(1).unwrap(), 42);
    }

    /// A copy of the committed fixture `name` (a snapshot and a log), opened.
    fn open_fixture(name: &str) -> (tempfile::TempDir, LocalMetadataStore) {
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name);
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join(META_DIR)).unwrap();
        for name in [SNAPSHOT_FILE, LOG_FILE] {
            fs::copy(fixture.join(name), dir.path().join(META_DIR).join(name)).unwrap();
        }
        let store = LocalMetadataStore::open(dir.path()).unwrap();
        (dir, store)
    }

    #[test]
    fn committed_v4_fixture_with_a_scram_credential_loads_and_takes_acls() {
        let (dir, store) = open_fixture("meta-v4");
        assert_eq!(store.cluster_id(), "bRWa-zzMSuCXxN0qJi744g");
        assert_eq!(store.topic("orders").unwrap().partitions, 2);
        let credentials = store.scram_credentials();
        assert_eq!(credentials.len(), 1);
        assert_eq!(
            (credentials[0].user.as_str(), credentials[0].mechanism),
            ("alice", 1)
        );
        assert_eq!(credentials[0].iterations, 4096);
        assert_eq!(store.acls(), (0, Vec::new()));
        store
            .alter_acls(&[crate::AclChange::Create(acl("orders"))])
            .unwrap();
        drop(store);
        let store = LocalMetadataStore::open(dir.path()).unwrap();
        assert_eq!(store.acls(), (4, vec![acl("orders")]));
    }

    #[test]
    fn committed_v5_fixture_with_an_acl_loads_and_takes_client_quotas() {
        let (dir, store) = open_fixture("meta-v5");
        assert_eq!(store.cluster_id(), "zjRjnHGIQiqagJ8PNnnsvA");
        assert_eq!(store.topic("orders").unwrap().partitions, 2);
        let (version, acls) = store.acls();
        assert_eq!((version, acls.len()), (3, 1));
        assert_eq!(acls[0].resource_name, "orders");
        assert_eq!(store.client_quotas(), (0, Vec::new()));
        store
            .alter_client_quotas(&[quota("alice", Some(1024.0))])
            .unwrap();
        drop(store);
        let store = LocalMetadataStore::open(dir.path()).unwrap();
        let (version, quotas) = store.client_quotas();
        assert_eq!((version, quotas.len()), (4, 1));
        assert_eq!(quotas[0].value, 1024.0);
    }

    fn quota(user: &str, value: Option<f64>) -> crate::ClientQuotaChange {
        crate::ClientQuotaChange {
            entity: vec![crate::QuotaEntityPart {
                entity_type: "user".into(),
                name: Some(user.into()),
            }],
            key: "producer_byte_rate".into(),
            value,
        }
    }

    #[test]
    fn client_quotas_survive_reopen_from_the_log_and_from_a_snapshot_with_their_version() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalMetadataStore::open(dir.path()).unwrap();
        assert_eq!(store.client_quotas_version(), 0);
        store
            .alter_client_quotas(&[quota("b", Some(2.0)), quota("a", Some(1.0))])
            .unwrap();
        let first = store.client_quotas_version();
        assert!(first > 0);
        store.allocate_producer_ids(1).unwrap();
        assert_eq!(
            store.client_quotas_version(),
            first,
            "other changes leave it"
        );
        store
            .alter_client_quotas(&[
                quota("b", None),
                quota("a", Some(3.0)),
                quota("never", None),
            ])
            .unwrap();
        let (version, quotas) = store.client_quotas();
        assert!(version > first);
        let values: Vec<(Option<String>, f64)> = quotas
            .iter()
            .map(|q| (q.entity[0].name.clone(), q.value))
            .collect();
        assert_eq!(values, vec![(Some("a".to_owned()), 3.0)]);
        drop(store);
        let store = LocalMetadataStore::open(dir.path()).unwrap();
        assert_eq!(
            store.client_quotas(),
            (version, quotas.clone()),
            "from the log"
        );
        let state = store.lock().unwrap();
        write_snapshot(&store.dir, &state.doc).unwrap();
        drop(state);
        write_empty_log(&store.dir).unwrap();
        drop(store);
        let store = LocalMetadataStore::open(dir.path()).unwrap();
        assert_eq!(store.client_quotas(), (version, quotas), "from a snapshot");
    }

    fn acl(topic: &str) -> crate::AclEntry {
        crate::AclEntry {
            resource_type: 2,
            resource_name: topic.into(),
            pattern_type: 3,
            principal: "User:alice".into(),
            host: "*".into(),
            operation: 3,
            permission_type: 3,
        }
    }

    #[test]
    fn acls_survive_reopen_from_the_log_and_from_a_snapshot_with_their_version() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalMetadataStore::open(dir.path()).unwrap();
        assert_eq!(store.acls_version(), 0);
        store
            .alter_acls(&[
                crate::AclChange::Create(acl("b")),
                crate::AclChange::Create(acl("a")),
                crate::AclChange::Create(acl("a")),
            ])
            .unwrap();
        let first = store.acls_version();
        assert!(first > 0);
        store.allocate_producer_ids(1).unwrap();
        assert_eq!(store.acls_version(), first, "other changes leave it");
        store
            .alter_acls(&[
                crate::AclChange::Delete(acl("b")),
                crate::AclChange::Delete(acl("never")),
                crate::AclChange::Create(acl("c")),
            ])
            .unwrap();
        let want = (store.acls_version(), vec![acl("a"), acl("c")]);
        assert!(want.0 > first);
        assert_eq!(store.acls(), want);
        drop(store);
        let store = LocalMetadataStore::open(dir.path()).unwrap();
        assert_eq!(store.acls(), want, "from the log");
        let state = store.lock().unwrap();
        write_snapshot(&store.dir, &state.doc).unwrap();
        drop(state);
        write_empty_log(&store.dir).unwrap();
        drop(store);
        let store = LocalMetadataStore::open(dir.path()).unwrap();
        assert_eq!(store.acls(), want, "from a snapshot");
    }

    #[test]
    fn committed_v1_fixture_still_loads() {
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/meta-v1.json");
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join(META_DIR)).unwrap();
        fs::copy(&fixture, dir.path().join(META_DIR).join(DOCUMENT_FILE)).unwrap();

        let store = LocalMetadataStore::open(dir.path()).unwrap();
        assert_eq!(store.cluster_id(), "q1Sh-9_ISia_zwGINzRvyQ");
        let orders = store.topic("orders").unwrap();
        assert_eq!(
            orders.id,
            Uuid::parse_str("6f1c2a8e-3b4d-4e5f-8a9b-0c1d2e3f4a5b").unwrap()
        );
        assert_eq!(orders.partitions, 4);
        assert_eq!(orders.replication_factor, 1);
        assert_eq!(
            orders.configs.get("cleanup.policy").map(String::as_str),
            Some("compact")
        );
        assert_eq!(store.topic("clicks").unwrap().partitions, 1);
        assert_eq!(
            store
                .broker_configs()
                .get("log.retention.ms")
                .map(String::as_str),
            Some("3600000")
        );
        assert_eq!(store.allocate_producer_ids(1).unwrap(), 42);
        // Read once: the snapshot and the log replace the old document.
        let meta = dir.path().join(META_DIR);
        assert!(!meta.join(DOCUMENT_FILE).exists());
        drop(store);
        let store = LocalMetadataStore::open(dir.path()).unwrap();
        assert_eq!(store.cluster_id(), "q1Sh-9_ISia_zwGINzRvyQ");
        assert_eq!(store.allocate_producer_ids(1).unwrap(), 43);
    }
}
