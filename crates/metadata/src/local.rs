//! A durable single-node [`MetadataStore`]: the whole metadata state is one
//! versioned JSON document, `<data dir>/meta/metadata.json`, replaced
//! atomically on every change.
//!
//! A change is written to `metadata.json.tmp`, fsync'd, renamed over
//! `metadata.json`, and the folder is fsync'd, all before the call returns.
//! A crash at any point leaves either the old or the new document in place;
//! a temp file left behind was never committed and is discarded at open.
//! The in-memory copy changes only after the new document is durable, and a
//! failed write poisons the store (it refuses further changes until restart)
//! because after a failed fsync the file's state on disk is unknown.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use uuid::Uuid;

use crate::{ConfigChange, MetadataError, MetadataStore, NewTopic, TopicMeta};

/// The document format this code writes; it reads this one and every older one.
const FORMAT_VERSION: u32 = 1;
/// Folder under the data dir that holds the document.
const META_DIR: &str = "meta";
/// The committed document.
const DOCUMENT_FILE: &str = "metadata.json";
/// Where the next document is written before it is renamed into place.
const TEMP_FILE: &str = "metadata.json.tmp";
/// Largest document read at open, so a damaged or foreign file cannot make
/// the broker allocate without bound.
const DOCUMENT_BYTES_MAX: u64 = 256 << 20;
/// Most producer ids one call may allocate.
const PRODUCER_ID_BLOCK_MAX: i64 = 1 << 20;

/// The document as stored. Its fields are the on-disk format: renaming one
/// breaks every existing data dir, so changes go through `format_version`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Document {
    format_version: u32,
    /// Kafka-style cluster id: a random UUID, base64url without padding.
    cluster_id: String,
    /// Ordered by name.
    topics: Vec<StoredTopic>,
    /// Broker-level config overrides set at runtime, by Kafka broker config name.
    broker_configs: BTreeMap<String, String>,
    /// The first producer id not yet handed out.
    next_producer_id: i64,
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

impl From<&StoredTopic> for TopicMeta {
    fn from(t: &StoredTopic) -> Self {
        TopicMeta {
            name: t.name.clone(),
            id: t.id,
            partitions: t.partitions,
            replication_factor: t.replication_factor,
            configs: t.configs.clone(),
        }
    }
}

/// In-memory state: the last durable document, plus whether writes are refused.
#[derive(Debug)]
struct State {
    doc: Document,
    /// Why the store refuses changes, after a write or fsync failed.
    poisoned: Option<String>,
}

/// The local metadata store. Every change holds one lock from validation to
/// fsync, so concurrent calls are serialized.
#[derive(Debug)]
pub struct LocalMetadataStore {
    /// `<data dir>/meta`.
    dir: PathBuf,
    state: Mutex<State>,
}

impl LocalMetadataStore {
    /// Open the store under `dir` (the broker's data dir), creating a fresh
    /// one with a new cluster id if none exists.
    pub fn open(dir: &Path) -> Result<Self, MetadataError> {
        let meta_dir = dir.join(META_DIR);
        fs::create_dir_all(&meta_dir).map_err(|e| io_error(&meta_dir, "cannot create", e))?;
        // The folder entry itself must survive a crash, or the first document could vanish.
        sync_dir(dir).map_err(|e| io_error(dir, "cannot fsync", e))?;

        // A temp file was never renamed into place, so it never held committed state.
        let temp = meta_dir.join(TEMP_FILE);
        match fs::remove_file(&temp) {
            Ok(()) => {
                tracing::warn!(file = %temp.display(), "discarded an uncommitted metadata write")
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error(&temp, "cannot remove", e)),
        }

        let path = meta_dir.join(DOCUMENT_FILE);
        let doc = match read_bounded(&path) {
            Ok(bytes) => parse_document(&path, &bytes)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let doc = Document {
                    format_version: FORMAT_VERSION,
                    cluster_id: encode_uuid(random_uuid(|_| false)),
                    topics: Vec::new(),
                    broker_configs: BTreeMap::new(),
                    next_producer_id: 0,
                };
                write_document(&meta_dir, &doc)?;
                tracing::info!(cluster_id = %doc.cluster_id, "created cluster metadata");
                doc
            }
            Err(e) => return Err(io_error(&path, "cannot read", e)),
        };
        Ok(Self {
            dir: meta_dir,
            state: Mutex::new(State {
                doc,
                poisoned: None,
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Memory changes only after a durable write, so a panic while the lock
        // was held leaves the last committed state: safe to keep using.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Apply `change` to a copy of the document, make the copy durable, and
    /// only then adopt it. Returns what `change` returned.
    fn commit<T>(
        &self,
        change: impl FnOnce(&mut Document) -> Result<T, MetadataError>,
    ) -> Result<T, MetadataError> {
        let mut state = self.lock();
        if let Some(reason) = &state.poisoned {
            return Err(MetadataError::Storage(format!(
                "metadata store refuses changes after an earlier write failure: {reason}"
            )));
        }
        let mut next = state.doc.clone();
        let out = change(&mut next)?;
        if let Err(err) = write_document(&self.dir, &next) {
            state.poisoned = Some(err.to_string());
            return Err(err);
        }
        state.doc = next;
        Ok(out)
    }
}

impl MetadataStore for LocalMetadataStore {
    fn cluster_id(&self) -> String {
        self.lock().doc.cluster_id.clone()
    }

    fn topics(&self) -> Vec<TopicMeta> {
        self.lock().doc.topics.iter().map(TopicMeta::from).collect()
    }

    fn topic(&self, name: &str) -> Option<TopicMeta> {
        let state = self.lock();
        find(&state.doc, name).map(TopicMeta::from)
    }

    fn topic_by_id(&self, id: Uuid) -> Option<TopicMeta> {
        let state = self.lock();
        state
            .doc
            .topics
            .iter()
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
            let slot = match doc
                .topics
                .binary_search_by(|t| t.name.as_str().cmp(&topic.name))
            {
                Ok(_) => return Err(MetadataError::TopicAlreadyExists(topic.name.clone())),
                Err(slot) => slot,
            };
            if topic.id.is_nil() || doc.topics.iter().any(|t| t.id == topic.id) {
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
            doc.topics.insert(slot, stored);
            Ok(meta)
        })
    }

    fn delete_topic(&self, name: &str) -> Result<TopicMeta, MetadataError> {
        self.commit(|doc| {
            let index = position(doc, name)?;
            Ok(TopicMeta::from(&doc.topics.remove(index)))
        })
    }

    fn set_partition_count(&self, name: &str, total: i32) -> Result<TopicMeta, MetadataError> {
        self.commit(|doc| {
            let index = position(doc, name)?;
            let topic = doc
                .topics
                .get_mut(index)
                .ok_or_else(|| MetadataError::UnknownTopic(name.to_string()))?;
            if total <= topic.partitions {
                return Err(MetadataError::InvalidPartitions(format!(
                    "topic '{name}' has {} partitions; the new total {total} must be larger",
                    topic.partitions
                )));
            }
            topic.partitions = total;
            Ok(TopicMeta::from(&*topic))
        })
    }

    fn alter_topic_configs(
        &self,
        name: &str,
        changes: &[ConfigChange],
    ) -> Result<TopicMeta, MetadataError> {
        self.commit(|doc| {
            let index = position(doc, name)?;
            let topic = doc
                .topics
                .get_mut(index)
                .ok_or_else(|| MetadataError::UnknownTopic(name.to_string()))?;
            apply_changes(&mut topic.configs, changes);
            Ok(TopicMeta::from(&*topic))
        })
    }

    fn broker_configs(&self) -> BTreeMap<String, String> {
        self.lock().doc.broker_configs.clone()
    }

    fn alter_broker_configs(&self, changes: &[ConfigChange]) -> Result<(), MetadataError> {
        self.commit(|doc| {
            apply_changes(&mut doc.broker_configs, changes);
            Ok(())
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
            doc.next_producer_id = first
                .checked_add(count)
                .ok_or_else(|| MetadataError::Storage("producer ids are exhausted".into()))?;
            Ok(first)
        })
    }
}

fn find<'a>(doc: &'a Document, name: &str) -> Option<&'a StoredTopic> {
    doc.topics.iter().find(|t| t.name == name)
}

fn position(doc: &Document, name: &str) -> Result<usize, MetadataError> {
    doc.topics
        .iter()
        .position(|t| t.name == name)
        .ok_or_else(|| MetadataError::UnknownTopic(name.to_string()))
}

fn apply_changes(configs: &mut BTreeMap<String, String>, changes: &[ConfigChange]) {
    for change in changes {
        match change {
            ConfigChange::Set(key, value) => {
                configs.insert(key.clone(), value.clone());
            }
            ConfigChange::Delete(key) => {
                configs.remove(key);
            }
        }
    }
}

/// Kafka's textual form of a UUID: 16 bytes in base64url without padding (22 characters).
fn encode_uuid(id: Uuid) -> String {
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

/// Parse and check a stored document; every failure names the file.
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
    doc.topics.sort_by(|a, b| a.name.cmp(&b.name));
    for (i, topic) in doc.topics.iter().enumerate() {
        if topic.partitions < 1 {
            return Err(corrupt(format!(
                "topic '{}' has {} partitions",
                topic.name, topic.partitions
            )));
        }
        let duplicate = doc
            .topics
            .iter()
            .skip(i + 1)
            .find(|other| other.name == topic.name || other.id == topic.id);
        if let Some(other) = duplicate {
            return Err(corrupt(format!(
                "topics '{}' and '{}' share a name or an id",
                topic.name, other.name
            )));
        }
    }
    // Older formats are upgraded in memory; the next change writes the current one.
    doc.format_version = FORMAT_VERSION;
    Ok(doc)
}

/// Write `doc` to the temp file, fsync it, rename it over the document, and
/// fsync the folder so the rename itself is durable.
fn write_document(dir: &Path, doc: &Document) -> Result<(), MetadataError> {
    let temp = dir.join(TEMP_FILE);
    let path = dir.join(DOCUMENT_FILE);
    let bytes = serde_json::to_vec_pretty(doc).map_err(|e| {
        MetadataError::Storage(format!(
            "cannot encode metadata for {}: {e}",
            path.display()
        ))
    })?;
    let write = || -> io::Result<()> {
        let mut file = File::create(&temp)?;
        file.write_all(&bytes)?;
        file.write_all(b"\n")?;
        file.sync_all()
    };
    write().map_err(|e| io_error(&temp, "cannot write", e))?;
    fs::rename(&temp, &path).map_err(|e| io_error(&path, "cannot replace", e))?;
    sync_dir(dir).map_err(|e| io_error(dir, "cannot fsync", e))
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn io_error(path: &Path, what: &str, err: io::Error) -> MetadataError {
    MetadataError::Storage(format!("{what} {}: {err}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_topic(name: &str, partitions: i32) -> NewTopic {
        NewTopic {
            name: name.to_string(),
            id: Uuid::new_v4(),
            partitions,
            replication_factor: 1,
            configs: BTreeMap::from([("retention.ms".to_string(), "1000".to_string())]),
        }
    }

    fn set(key: &str, value: &str) -> ConfigChange {
        ConfigChange::Set(key.to_string(), value.to_string())
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
    }
}
