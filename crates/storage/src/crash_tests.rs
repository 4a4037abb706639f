//! Crash tests in the tikv/raft-engine pattern: for every failpoint in front
//! of an fsync or a rename, a workload (appends to several partitions that
//! wait for durability, leader-epoch changes, a truncation, replica appends,
//! checkpoints, DeleteRecords with retention deleting segments, a replica's
//! fresh start past its log end, compaction,
//! a partition removed, and a restart, so recovery's own syncs run too)
//! runs until the failpoint fails the step (`return`) or panics in it
//! (`panic`). Then the process "crashes": every handle is dropped without a
//! shutdown and the data directory is rolled back to what the disk had
//! made durable ([`CrashIo`]: file contents as of their last fdatasync,
//! folder entries as of their folder's last fsync). The log must reopen and
//! hold every acknowledged batch byte for byte, nothing past a durable
//! truncation, the acknowledged leader epochs, and offsets that only grow.
//!
//! The failpoints are process-global, so each test holds a
//! [`fail::FailScenario`] (one at a time) while it configures them.

#![cfg(feature = "failpoints")]

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

use bytes::Bytes;

use crate::batch::test_batches::batch;
use crate::io::FileIo;
use crate::log::LogInner;
use crate::store::Store;
use crate::tests::{ManualClock, block_on, pid};
use crate::*;

/// A folder entry as the disk holds it.
#[derive(Debug, Clone, Copy)]
enum Node {
    /// A file, by inode number.
    File(u64),
    Dir,
}

/// What survives a crash: each folder's entries as of its last fsync, and
/// each file's content as of its last fdatasync.
#[derive(Default)]
struct Durable {
    dirs: HashMap<PathBuf, BTreeMap<OsString, Node>>,
    contents: HashMap<u64, Vec<u8>>,
    /// One open handle per inode seen, so no inode number is reused while
    /// a listing still names it.
    held: HashMap<u64, File>,
}

impl Durable {
    fn hold(&mut self, file: &File) -> io::Result<u64> {
        let ino = file.metadata()?.ino();
        if let std::collections::hash_map::Entry::Vacant(v) = self.held.entry(ino) {
            v.insert(file.try_clone()?);
        }
        Ok(ino)
    }

    fn snapshot_dir(&mut self, dir: &Path) -> io::Result<()> {
        let mut listing = BTreeMap::new();
        for ent in std::fs::read_dir(dir)? {
            let ent = ent?;
            let node = if ent.file_type()?.is_dir() {
                Node::Dir
            } else {
                Node::File(self.hold(&File::open(ent.path())?)?)
            };
            listing.insert(ent.file_name(), node);
        }
        self.dirs.insert(dir.to_path_buf(), listing);
        Ok(())
    }

    /// Everything under `dir` as it is now, all of it durable.
    fn snapshot_tree(&mut self, dir: &Path) -> io::Result<()> {
        self.snapshot_dir(dir)?;
        let listing = self.dirs.get(dir).cloned().unwrap_or_default();
        for (name, node) in listing {
            let path = dir.join(name);
            match node {
                Node::Dir => self.snapshot_tree(&path)?,
                Node::File(ino) => {
                    self.contents.insert(ino, std::fs::read(&path)?);
                }
            }
        }
        Ok(())
    }

    /// Replace what is under `root` with what the disk made durable.
    /// What a crash leaves: with `mix`, each file keeps its unsynced
    /// writes or loses them all, and each folder its unsynced entries, as
    /// a hash of `mix` and the file (or folder) picks: pages the kernel
    /// wrote back on its own. Without, every unsynced change is lost.
    fn crash_image(&self, root: &Path, mix: Option<u64>) -> io::Result<Durable> {
        let mut image = Durable {
            dirs: self.dirs.clone(),
            contents: self.contents.clone(),
            held: HashMap::new(),
        };
        let Some(seed) = mix else {
            return Ok(image);
        };
        let mut now = Durable::default();
        now.snapshot_tree(root)?;
        fn keeps<T: std::hash::Hash>(seed: u64, what: &T) -> bool {
            use std::hash::Hasher;
            let mut h = std::collections::hash_map::DefaultHasher::new();
            std::hash::Hash::hash(&seed, &mut h);
            what.hash(&mut h);
            h.finish().is_multiple_of(2)
        }
        for (dir, listing) in now.dirs {
            if keeps(seed, &dir) {
                image.dirs.insert(dir, listing);
            }
        }
        for (ino, bytes) in now.contents {
            if keeps(seed, &ino) {
                image.contents.insert(ino, bytes);
            }
        }
        Ok(image)
    }

    fn materialize(&self, root: &Path) -> io::Result<()> {
        for ent in std::fs::read_dir(root)? {
            let ent = ent?;
            if ent.file_type()?.is_dir() {
                std::fs::remove_dir_all(ent.path())?;
            } else {
                std::fs::remove_file(ent.path())?;
            }
        }
        self.write_dir(root)
    }

    fn write_dir(&self, dir: &Path) -> io::Result<()> {
        let Some(listing) = self.dirs.get(dir) else {
            return Ok(()); // created but never fsync'd: empty
        };
        for (name, node) in listing {
            let path = dir.join(name);
            match node {
                Node::Dir => {
                    std::fs::create_dir(&path)?;
                    self.write_dir(&path)?;
                }
                Node::File(ino) => {
                    let bytes = self.contents.get(ino).map_or(&[][..], Vec::as_slice);
                    std::fs::write(&path, bytes)?;
                }
            }
        }
        Ok(())
    }
}

/// File I/O that remembers what each fdatasync and folder fsync made
/// durable (and skips the real, slow, fsync), so a test can roll the data
/// directory back to it: a crash that loses every unsynced write.
struct CrashIo {
    durable: Mutex<Durable>,
}

impl CrashIo {
    /// Everything under `root` counts as durable (a restart after a crash).
    fn new(root: &Path) -> Arc<Self> {
        let mut durable = Durable::default();
        durable.snapshot_tree(root).unwrap();
        Arc::new(Self {
            durable: Mutex::new(durable),
        })
    }
}

impl FileIo for CrashIo {
    fn sync_data(&self, file: &File) -> io::Result<()> {
        // Through /proc: the file may be open for writing only.
        let bytes = std::fs::read(format!("/proc/self/fd/{}", file.as_raw_fd()))?;
        let mut d = self.durable.lock().unwrap();
        let ino = d.hold(file)?;
        d.contents.insert(ino, bytes);
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.durable.lock().unwrap().snapshot_dir(dir)
    }

    fn failpoints(&self) -> bool {
        true
    }
}

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 1_024,
        // Checkpoints only where the workload asks (and at open).
        index_checkpoint_interval_ms: 3_600_000,
        // Fewer than the partitions: index files are closed (and synced) on eviction.
        index_open_files_max: 1,
        index_memory_bytes: 0,
        ..LogConfig::default()
    }
}

/// The failpoint the workload fails on purpose to poison the log.
const POISON_SITE: &str = "storage::segment_write";

/// A life of the log: its handles, and the I/O that records durability.
struct Life {
    log: CommitLog,
    io: Arc<CrashIo>,
}

fn open(root: &Path) -> Result<Life, StorageError> {
    let io = CrashIo::new(root);
    let (log, _) =
        CommitLog::open_with_io(root, config(), Arc::new(ManualClock::default()), io.clone())?;
    Ok(Life { log, io })
}

/// Drop every handle of the log without a shutdown, wait for its threads
/// to let go, and roll the directory back to what was durable.
fn crash(root: &Path, log: CommitLog, io: Arc<CrashIo>) {
    crash_mixed(root, log, io, None);
}

/// [`crash`], keeping some unsynced changes as `mix` picks ([`Durable::crash_image`]).
fn crash_mixed(root: &Path, log: CommitLog, io: Arc<CrashIo>, mix: Option<u64>) {
    let weak_store: Weak<Store> = Arc::downgrade(&log.inner);
    let weak: Weak<LogInner> = Arc::downgrade(&log.inner.log);
    drop(log);
    // The flusher and checkpoint threads end once they see no handle left.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while weak_store.strong_count() > 0 || weak.strong_count() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the log's threads never let go of it"
        );
        std::thread::yield_now();
    }
    let image = io.durable.lock().unwrap().crash_image(root, mix).unwrap();
    image.materialize(root).unwrap();
}

/// One batch as the workload appended it.
#[derive(Debug, Clone)]
struct Appended {
    last: i64,
    bytes: Vec<u8>,
}

/// What the workload was told about one partition.
#[derive(Debug, Default, Clone)]
struct Model {
    /// Acknowledged batches (durable), by base offset.
    acked: BTreeMap<i64, Appended>,
    /// Every batch that may be in the log (acknowledged or not), by base offset.
    maybe: BTreeMap<i64, Appended>,
    /// The log-start offset last made durable.
    log_start: i64,
    /// An attempted DeleteRecords whose outcome is unknown.
    log_start_maybe: Option<i64>,
    /// The leader epoch last made durable, and one attempted whose outcome is unknown.
    epoch: i32,
    epoch_maybe: Option<i32>,
    /// Compacted: batches may be rewritten, so only the shape is checked.
    compact: bool,
    /// Base offsets of transaction markers attempted (their bytes are the
    /// log's own: a marker found there is checked for being a control batch).
    markers: std::collections::BTreeSet<i64>,
}

const LEADER_A: i32 = 0;
const LEADER_B: i32 = 1;
const REPLICA: i32 = 2;
const COMPACTED: i32 = 3;
/// Transactions: data batches of a new producer id per transaction, and
/// their markers.
const TXN: i32 = 4;
const PARTITIONS: [i32; 5] = [LEADER_A, LEADER_B, REPLICA, COMPACTED, TXN];

/// The workload's state across lives: what was acknowledged.
struct Workload {
    models: BTreeMap<i32, Model>,
    /// Partitions whose creation was acknowledged, or whose removal was not.
    created: bool,
    removed: Option<bool>,
    counter: usize,
    /// Which unsynced changes a crash keeps ([`Durable::crash_image`]).
    mix: Option<u64>,
}

/// The batch `n` (values differ by length), stamped as the log stores it.
fn stored_bytes(b: &Bytes, base: i64, epoch: i32) -> Vec<u8> {
    let mut v = b.to_vec();
    crate::batch::patch_offsets(&mut v, base, epoch);
    v
}

fn log_of(life: &Option<Life>) -> Result<CommitLog, String> {
    Ok(life.as_ref().ok_or("no log")?.log.clone())
}

/// A step failed (an error, or a panic caught): the site fired.
type Step = Result<(), String>;

fn caught<T>(f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(p) => Err(panic_text(p.as_ref())),
    }
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "panic".into())
}

impl Workload {
    fn new(mix: Option<u64>) -> Self {
        Self {
            models: BTreeMap::new(),
            created: false,
            removed: None,
            counter: 0,
            mix,
        }
    }

    fn part(&self, log: &CommitLog, n: i32) -> Result<Partition, String> {
        log.partition(pid(n))
            .ok_or_else(|| format!("partition {n} is missing"))
    }

    fn create(&mut self, log: &CommitLog) -> Step {
        let ids: Vec<PartitionId> = PARTITIONS.iter().map(|n| pid(*n)).collect();
        let parts = caught(|| {
            log.create_partitions(&ids, PartitionConfig::default())
                .map_err(|e| e.to_string())
        })?;
        for n in PARTITIONS {
            self.models.insert(
                n,
                Model {
                    compact: n == COMPACTED,
                    ..Model::default()
                },
            );
        }
        if let Some(p) = parts.iter().find(|p| p.id() == pid(COMPACTED)) {
            p.set_config(PartitionConfig {
                compact: true,
                ..PartitionConfig::default()
            });
        }
        self.created = true;
        Ok(())
    }

    /// A client append, acknowledged once durable (acks=all).
    fn append(&mut self, log: &CommitLog, n: i32, records: usize) -> Step {
        if self.removed.is_some() && n == COMPACTED {
            return Ok(());
        }
        let p = self.part(log, n)?;
        self.counter += 1;
        let b = batch(records, 8 + self.counter % 23);
        let epoch = p.leader_epoch();
        // An append that fails may have written its batch (a failure after
        // the write, in its index): it may come back, at the log end.
        let base = p.offsets().log_end;
        let appended = Appended {
            last: base + records as i64 - 1,
            bytes: stored_bytes(&b, base, epoch),
        };
        let model = self.models.get_mut(&n).ok_or("no model")?;
        model.maybe.insert(base, appended.clone());
        let out = caught(|| p.append(b.clone()).map_err(|e| e.to_string()))?;
        if out.base_offset != base {
            return Err(format!(
                "appended at {}, the log end was {base}",
                out.base_offset
            ));
        }
        caught(|| block_on(out.ack_wait(true).wait()).map_err(|e| e.to_string()))?;
        model.acked.insert(base, appended);
        Ok(())
    }

    /// A transactional append of producer `producer` (sequence `seq`),
    /// acknowledged once committed.
    fn txn_append(&mut self, log: &CommitLog, producer: i64, seq: i32) -> Step {
        let p = self.part(log, TXN)?;
        self.counter += 1;
        let b = crate::txn_tests::producer_batch(2, (producer, 0, seq), true, "t");
        let base = p.offsets().log_end;
        let appended = Appended {
            last: base + 1,
            bytes: stored_bytes(&b, base, p.leader_epoch()),
        };
        let model = self.models.get_mut(&TXN).ok_or("no model")?;
        model.maybe.insert(base, appended.clone());
        let out = caught(|| p.append(b.clone()).map_err(|e| e.to_string()))?;
        caught(|| block_on(out.ack_wait(true).wait()).map_err(|e| e.to_string()))?;
        model.acked.insert(base, appended);
        Ok(())
    }

    /// A marker ending `producer`'s transaction, acknowledged once committed.
    fn txn_marker(&mut self, log: &CommitLog, producer: i64, commit: bool) -> Step {
        let p = self.part(log, TXN)?;
        let base = p.offsets().log_end;
        let model = self.models.get_mut(&TXN).ok_or("no model")?;
        model.markers.insert(base);
        let marker = TxnMarker {
            commit,
            coordinator_epoch: 1,
        };
        let out = caught(|| {
            p.append_marker(producer, 0, marker)
                .map_err(|e| e.to_string())
        })?;
        caught(|| block_on(out.ack_wait(true).wait()).map_err(|e| e.to_string()))?;
        let read = caught(|| p.read(base, 1 << 20).map_err(|e| e.to_string()))?;
        let (header, bytes) = batches(&read.records)
            .next()
            .ok_or("the marker reads back as nothing")?
            .map_err(|e| e.to_string())?;
        let appended = Appended {
            last: header.last_offset(),
            bytes: bytes.to_vec(),
        };
        model.maybe.insert(base, appended.clone());
        model.acked.insert(base, appended);
        Ok(())
    }

    /// DeleteRecords of everything the transactional partition holds: a
    /// log-start move past every producer's batches, which makes the next
    /// checkpoint snapshot its producer state.
    fn txn_delete_all(&mut self, log: &CommitLog) -> Step {
        let p = self.part(log, TXN)?;
        let model = self.models.get_mut(&TXN).ok_or("no model")?;
        let target = p.offsets().high_watermark;
        model.log_start_maybe = Some(target);
        let start = caught(|| p.delete_records_before(target).map_err(|e| e.to_string()))?;
        model.log_start = start;
        model.log_start_maybe = None;
        Ok(())
    }

    /// A replica append of a batch a leader stored at `gap` past the log end.
    fn replicate(&mut self, log: &CommitLog, gap: i64) -> Step {
        let p = self.part(log, REPLICA)?;
        self.counter += 1;
        let model = self.models.get_mut(&REPLICA).ok_or("no model")?;
        let base = p.offsets().log_end + gap;
        let b = batch(2, 8 + self.counter % 23);
        let bytes = stored_bytes(&b, base, 7);
        let appended = Appended {
            last: base + 1,
            bytes: bytes.clone(),
        };
        model.maybe.insert(base, appended.clone());
        // The leader's epoch in the batch becomes the replica's.
        model.epoch_maybe = Some(7);
        let out = caught(|| {
            p.append_replica(Bytes::from(bytes))
                .map_err(|e| e.to_string())
        })?;
        caught(|| block_on(out.durable.wait()).map_err(|e| e.to_string()))?;
        model.acked.insert(base, appended);
        model.epoch = 7;
        model.epoch_maybe = None;
        Ok(())
    }

    fn set_epoch(&mut self, log: &CommitLog, n: i32, epoch: i32) -> Step {
        let p = self.part(log, n)?;
        let model = self.models.get_mut(&n).ok_or("no model")?;
        model.epoch_maybe = Some(epoch);
        let items = [(p, epoch)];
        caught(|| {
            let mut results = log.set_leader_epochs(&items);
            results
                .pop()
                .ok_or_else(|| "no result".to_string())?
                .map_err(|e| e.to_string())
        })?;
        model.epoch = epoch;
        model.epoch_maybe = None;
        Ok(())
    }

    /// Truncate partition `n` to the base of its second newest batch.
    fn truncate(&mut self, log: &CommitLog, n: i32) -> Step {
        let p = self.part(log, n)?;
        let model = self.models.get_mut(&n).ok_or("no model")?;
        let Some(target) = model.maybe.keys().rev().nth(1).copied() else {
            return Ok(());
        };
        // Until the truncation is durable, the batches past it may or may
        // not come back: none of them is owed any more.
        model.acked.retain(|base, _| *base < target);
        let end = caught(|| p.truncate_to(target).map_err(|e| e.to_string()))?;
        if end != target {
            return Err(format!("truncated partition {n} to {end}, asked {target}"));
        }
        model.maybe.retain(|base, _| *base < target);
        Ok(())
    }

    fn delete_records(&mut self, log: &CommitLog, n: i32) -> Step {
        let p = self.part(log, n)?;
        let model = self.models.get_mut(&n).ok_or("no model")?;
        // Half the batches: the oldest segments then hold no live data.
        let Some(target) = model.acked.keys().nth(model.acked.len() / 2).copied() else {
            return Ok(());
        };
        model.log_start_maybe = Some(target);
        let start = caught(|| p.delete_records_before(target).map_err(|e| e.to_string()))?;
        model.log_start = start;
        model.log_start_maybe = None;
        Ok(())
    }

    /// Remove every batch of partition `n` and start its log past its end
    /// (a follower behind its leader's log start).
    fn start_afresh(&mut self, log: &CommitLog, n: i32) -> Step {
        let p = self.part(log, n)?;
        let model = self.models.get_mut(&n).ok_or("no model")?;
        let target = p.offsets().log_end + 3;
        // Until it is durable the old log comes back whole (every
        // acknowledged batch at or past its log start), or the new start
        // with nothing below it: the check allows exactly those.
        model.log_start_maybe = Some(target);
        let start = caught(|| {
            p.truncate_fully_and_start_at(target)
                .map_err(|e| e.to_string())
        })?;
        if start != target {
            return Err(format!("started partition {n} at {start}, asked {target}"));
        }
        model.log_start = target;
        model.log_start_maybe = None;
        model.acked.clear();
        model.maybe.clear();
        Ok(())
    }

    fn checkpoint(&mut self, log: &CommitLog) -> Step {
        caught(|| {
            log.inner
                .write_checkpoint()
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
    }

    fn maintenance(&mut self, log: &CommitLog) -> Step {
        caught(|| log.run_maintenance().map_err(|e| e.to_string()))
    }

    fn remove(&mut self, log: &CommitLog) -> Step {
        self.removed = Some(false);
        caught(|| {
            log.remove_partition(pid(COMPACTED))
                .map_err(|e| e.to_string())
        })?;
        self.removed = Some(true);
        Ok(())
    }

    /// The workload before and after a restart; `Err` when a step failed.
    fn run(&mut self, root: &Path, life: &mut Option<Life>) -> Step {
        self.create(&log_of(life)?)?;
        for round in 0..3 {
            let l = log_of(life)?;
            for n in [LEADER_A, LEADER_B, COMPACTED] {
                self.append(&l, n, 1 + round)?;
                self.append(&l, n, 2)?;
            }
            self.replicate(&l, round as i64)?;
            let producer = 1_000 + round as i64;
            self.txn_append(&l, producer, 0)?;
            self.txn_append(&l, producer, 2)?;
            self.txn_marker(&l, producer, round != 1)?;
            match round {
                0 => {
                    self.set_epoch(&l, LEADER_A, 3)?;
                    self.set_epoch(&l, LEADER_B, 2)?;
                }
                1 => {
                    self.truncate(&l, LEADER_A)?;
                    self.truncate(&l, REPLICA)?;
                    self.txn_delete_all(&l)?;
                    self.checkpoint(&l)?;
                }
                _ => {
                    for n in [LEADER_A, LEADER_B, REPLICA] {
                        self.delete_records(&l, n)?;
                    }
                    self.start_afresh(&l, REPLICA)?;
                    self.maintenance(&l)?;
                    self.set_epoch(&l, LEADER_A, 4)?;
                    // Left open across the crash.
                    self.txn_append(&l, 2_000, 0)?;
                    self.truncate(&l, TXN)?;
                    self.txn_append(&l, 2_001, 0)?;
                }
            }
        }
        // Index entries past the last checkpoint, some synced when their
        // file was closed: recovery cuts them back and syncs the file.
        let l = log_of(life)?;
        // (More than the hot tail holds, then another partition's index
        // writes close the file.)
        for n in [LEADER_A, LEADER_B] {
            for _ in 0..crate::index::HOT_ENTRIES_MIN + 2 {
                self.append(&l, n, 1)?;
            }
        }
        drop(l);
        // A restart: recovery's own syncs run with the failpoint set too.
        let Life { log, io } = life.take().ok_or("no log")?;
        crash_mixed(root, log, io, self.mix);
        self.check_after_restart(root, life)?;
        let l = log_of(life)?;
        self.append(&l, LEADER_A, 2)?;
        self.replicate(&l, 1)?;
        self.txn_marker(&l, 2_001, false)?;
        self.remove(&l)?;
        self.maintenance(&l)?;
        self.checkpoint(&l)?;
        // A failed write poisons the log; DeleteRecords and maintenance
        // still record log-start moves and free the removed partition's
        // segments (their own replace and folder fsync).
        fail::cfg(POISON_SITE, "return").map_err(|e| e.to_string())?;
        let refused = self.append(&l, LEADER_A, 1);
        fail::remove(POISON_SITE);
        if refused.is_ok() {
            return Err("an append with a failing write was acknowledged".into());
        }
        self.delete_records(&l, LEADER_A)?;
        self.maintenance(&l)
    }

    /// Reopen (an error here is a step failing, e.g. a recovery sync) and
    /// check; the model then becomes what the log holds.
    fn check_after_restart(&mut self, root: &Path, life: &mut Option<Life>) -> Step {
        let opened = caught(|| open(root).map_err(|e| e.to_string()))?;
        let log = opened.log.clone();
        *life = Some(opened);
        self.check(&log);
        Ok(())
    }

    /// Everything acknowledged is there; nothing is there that was never
    /// appended, or that a durable truncation removed.
    fn check(&mut self, log: &CommitLog) {
        if !self.created {
            return;
        }
        for (&n, model) in &mut self.models {
            let p = log.partition(pid(n));
            if n == COMPACTED {
                // Removed: it never comes back; being removed: either.
                match (self.removed, &p) {
                    (Some(true), Some(_)) => panic!("a removed partition came back"),
                    (Some(_), None) => {
                        self.removed = Some(true);
                        continue;
                    }
                    _ => self.removed = None,
                }
            }
            let p = p.unwrap_or_else(|| panic!("partition {n}, created, is missing"));
            check_partition(n, &p, model);
        }
    }
}

/// Check one partition against its model, then make the model what it holds.
fn check_partition(n: i32, p: &Partition, model: &mut Model) {
    let offsets = p.offsets();
    let log_start = offsets.log_start;
    let allowed_starts = [Some(model.log_start), model.log_start_maybe];
    assert!(
        allowed_starts.contains(&Some(log_start)),
        "partition {n}: log start {log_start}, acknowledged {} (maybe {:?})",
        model.log_start,
        model.log_start_maybe
    );
    assert_eq!(offsets.high_watermark, offsets.log_end, "partition {n}");
    let epoch = p.leader_epoch();
    assert!(
        epoch == model.epoch || Some(epoch) == model.epoch_maybe,
        "partition {n}: leader epoch {epoch}, acknowledged {} (maybe {:?})",
        model.epoch,
        model.epoch_maybe
    );
    // Every batch in the log, in order.
    let mut found: BTreeMap<i64, Appended> = BTreeMap::new();
    let mut at = log_start;
    while at < offsets.log_end {
        let read = p.read(at, 1 << 20).unwrap();
        if read.records.is_empty() {
            break; // a gap up to the log end
        }
        let mut rest = &read.records[..];
        while !rest.is_empty() {
            let len = 12 + i32::from_be_bytes(rest[8..12].try_into().unwrap()) as usize;
            let bytes = &rest[..len];
            let base = i64::from_be_bytes(bytes[0..8].try_into().unwrap());
            let delta = i32::from_be_bytes(bytes[23..27].try_into().unwrap());
            let last = base + i64::from(delta);
            if let Some((prev, a)) = found.last_key_value() {
                assert!(
                    base > a.last,
                    "partition {n}: batch {base} overlaps batch {prev}"
                );
            }
            found.insert(
                base,
                Appended {
                    last,
                    bytes: bytes.to_vec(),
                },
            );
            at = last + 1;
            rest = &rest[len..];
        }
    }
    if let Some(a) = found.values().next_back() {
        assert!(
            a.last < offsets.log_end,
            "partition {n}: a batch past the log end"
        );
    }
    if model.compact {
        // Compaction rewrites batches: only ever the ones appended, at their offsets.
        for base in found.keys() {
            assert!(
                model.maybe.contains_key(base),
                "partition {n}: batch {base} was never appended"
            );
        }
        let newest = model.acked.keys().next_back();
        if let Some(base) = newest.filter(|b| **b >= log_start) {
            assert!(
                found.contains_key(base),
                "partition {n}: newest acknowledged batch {base} is lost"
            );
        }
    } else {
        for (base, a) in &found {
            let appended = model.maybe.get(base);
            let a_marker =
                model.markers.contains(base) && crate::batch::control_marker(&a.bytes).is_some();
            assert!(
                appended.is_some_and(|m| m.bytes == a.bytes) || a_marker,
                "partition {n}: batch {base} was never appended, or was truncated away, \
                 or its bytes differ"
            );
            // Its leader epoch reads back from the cache.
            let stamped = i32::from_be_bytes(a.bytes[12..16].try_into().unwrap());
            let cached = p.epoch_for_offset(*base);
            assert!(
                cached == Some(stamped) || (stamped == 0 && cached.is_none()),
                "partition {n}: batch {base} carries epoch {stamped}, the cache says {cached:?}"
            );
        }
        for (base, a) in &model.acked {
            if a.last < log_start {
                continue;
            }
            if *base >= log_start {
                assert!(
                    found.contains_key(base),
                    "partition {n}: acknowledged batch {base} is lost"
                );
            }
        }
    }
    if n == TXN {
        check_transactions(p, &found, log_start);
    }
    // Offsets only grow: the next append lands at the log end.
    let end = offsets.log_end;
    assert!(
        end >= model.acked.values().map(|a| a.last + 1).max().unwrap_or(0),
        "partition {n}: log end {end} below an acknowledged batch"
    );
    model.acked = found.clone();
    model.maybe = found;
    model.log_start = log_start;
    model.log_start_maybe = None;
    model.epoch = epoch;
    model.epoch_maybe = None;
}

/// The last stable offset and the aborted transactions a read_committed
/// read names are what the batches the log holds say: replayed in offset
/// order, a transactional batch opens its producer's transaction, a
/// marker ends it, and an ABORT marker files it.
fn check_transactions(p: &Partition, found: &BTreeMap<i64, Appended>, log_start: i64) {
    let mut open: BTreeMap<i64, i64> = BTreeMap::new();
    let mut expected = Vec::new();
    for (base, a) in found {
        let header = RecordBatchHeader::parse(&a.bytes).unwrap();
        if header.producer_id < 0 {
            continue;
        }
        if header.is_control() {
            let marker = crate::batch::control_marker(&a.bytes).unwrap();
            let first = open.remove(&header.producer_id);
            if let (Some(first), false) = (first, marker.commit) {
                expected.push((header.producer_id, first, *base));
            }
        } else if header.is_transactional() {
            open.entry(header.producer_id).or_insert(*base);
        }
    }
    let offsets = p.offsets();
    let lso = open
        .values()
        .copied()
        .min()
        .unwrap_or(offsets.high_watermark)
        .min(offsets.high_watermark)
        .max(log_start);
    assert_eq!(
        offsets.last_stable, lso,
        "partition {TXN}: the last stable offset disagrees with the open transactions {open:?}"
    );
    let read = p.read_committed(log_start, 1 << 20).unwrap();
    // The read ends at the last stable offset: it names the transactions
    // that began below the end of what it returned.
    let upper = batches(&read.records)
        .filter_map(Result::ok)
        .map(|(h, _)| h.last_offset() + 1)
        .last()
        .unwrap_or(log_start);
    // Transactions that began below the log start were dropped from `found`.
    let named: Vec<(i64, i64, i64)> = read
        .aborted
        .iter()
        .map(|a| (a.producer_id, a.first_offset, a.last_offset))
        .filter(|(_, first, _)| *first >= log_start)
        .collect();
    expected.retain(|(_, first, _)| *first < upper);
    assert_eq!(named, expected, "partition {TXN}: aborted transactions");
}

/// Run the workload with `site` set to `action` (a fail-rs action), crash
/// wherever it stopped, reopen, and check. Returns whether the site fired.
fn run_site(site: &str, action: &str, mix: Option<u64>) -> bool {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let mut w = Workload::new(mix);
    fail::cfg(site, action).unwrap();
    let mut life = None;
    let outcome = match caught(|| open(root).map_err(|e| e.to_string())) {
        Ok(l) => {
            life = Some(l);
            // A check inside the workload (after its restart) names the site too.
            match catch_unwind(AssertUnwindSafe(|| w.run(root, &mut life))) {
                Ok(outcome) => outcome,
                Err(p) => panic!("{site}={action}: {}", panic_text(p.as_ref())),
            }
        }
        Err(e) => Err(e),
    };
    fail::remove(site);
    let fired = outcome.is_err();
    if let Some(Life { log, io }) = life.take() {
        crash_mixed(root, log, io, mix);
    } else {
        // The open failed: nothing was written past the last crash image.
    }
    let reopened =
        open(root).unwrap_or_else(|e| panic!("{site}={action}: the log does not reopen: {e}"));
    let result = catch_unwind(AssertUnwindSafe(|| {
        w.check(&reopened.log);
        // And it takes appends again, at its log end.
        for n in [LEADER_A, LEADER_B] {
            let p = reopened.log.partition(pid(n));
            if let Some(p) = p {
                let end = p.offsets().log_end;
                let out = p.append(batch(1, 5)).unwrap();
                assert_eq!(out.base_offset, end);
                block_on(out.durable.wait()).unwrap();
            }
        }
    }));
    reopened.log.shutdown().unwrap();
    if let Err(p) = result {
        let msg = panic_text(p.as_ref());
        panic!("{site}={action} (stopped with {outcome:?}): {msg}");
    }
    fired
}

/// Every fsync and rename failpoint the workload reaches (docs/testing.md).
/// The index upgrade's (`storage::index_upgrade_*`, and
/// `storage::index_version_sync`) run only on an older index file:
/// [`a_crash_in_the_index_upgrade_keeps_every_record`].
const SITES: &[&str] = &[
    "storage::segment_sync",
    "storage::log_dir_sync",
    "storage::index_sync",
    "storage::index_close_sync",
    "storage::checkpoint_sync",
    "storage::checkpoint_rename",
    "storage::checkpoint_dir_sync",
    "storage::log_starts_sync",
    "storage::log_starts_rename",
    "storage::log_starts_dir_sync",
    "storage::leader_epochs_sync",
    "storage::leader_epochs_rename",
    "storage::leader_epochs_dir_sync",
    "storage::compacted_index_sync",
    "storage::compacted_index_rename",
    "storage::compacted_index_dir_sync",
    "storage::segment_delete_dir_sync",
    "storage::dead_data_index_dir_sync",
    "storage::partition_create_dir_sync",
    "storage::partition_remove_dir_sync",
    "storage::recovery_segment_sync",
    "storage::recovery_log_dir_sync",
    "storage::recovery_index_sync",
    "storage::snapshot_sync",
    "storage::snapshot_rename",
    "storage::snapshot_dir_sync",
    "storage::txn_index_dir_sync",
];

/// Each site fails (`return`) at its first hit and at later ones; the
/// crash loses every unsynced change.
#[test]
fn every_fsync_and_rename_failure_recovers_what_was_acknowledged() {
    let _scenario = fail::FailScenario::setup();
    for site in SITES {
        assert!(
            run_site(site, "return", None),
            "{site}: the workload never reached it"
        );
        for skip in [1, 5] {
            run_site(site, &format!("{skip}*off->return"), None);
        }
    }
}

/// The same, where the crash keeps some files' and folders' unsynced
/// changes and loses others' (the kernel wrote some back on its own).
#[test]
fn every_fsync_and_rename_failure_recovers_when_some_unsynced_writes_survive() {
    let _scenario = fail::FailScenario::setup();
    for (n, site) in SITES.iter().enumerate() {
        for (k, skip) in [0, 3].into_iter().enumerate() {
            let seed = (n * 2 + k) as u64;
            run_site(site, &format!("{skip}*off->return"), Some(seed));
        }
    }
}

/// Each site panics at its first hit and at a later one.
#[test]
fn a_panic_at_every_fsync_and_rename_recovers_what_was_acknowledged() {
    let _scenario = fail::FailScenario::setup();
    for site in SITES {
        assert!(
            run_site(site, "panic", None),
            "{site}: the workload never reached it"
        );
        run_site(site, "2*off->panic", None);
    }
}

/// The crash simulation itself: an unsynced write, an unsynced rename and
/// an unsynced new file are lost; synced ones stay.
#[test]
fn crash_io_keeps_only_what_was_synced() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::write(root.join("old"), b"old").unwrap();
    let io = CrashIo::new(root);
    let synced = File::create(root.join("synced")).unwrap();
    io.write_all_at(&synced, b"kept", 0).unwrap();
    io.sync_data(&synced).unwrap();
    io.write_all_at(&synced, b"lost", 4).unwrap();
    io.sync_dir(root).unwrap();
    std::fs::write(root.join("unsynced"), b"x").unwrap();
    std::fs::rename(root.join("old"), root.join("renamed")).unwrap();
    drop(synced);
    let image = io.durable.lock().unwrap().crash_image(root, None).unwrap();
    image.materialize(root).unwrap();
    let mut names: Vec<_> = std::fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    // The folder was fsync'd before the new file and the rename: neither is durable.
    assert_eq!(names, ["old", "synced"]);
    assert_eq!(std::fs::read(root.join("synced")).unwrap(), b"kept");
    assert_eq!(std::fs::read(root.join("old")).unwrap(), b"old");
}

/// A partition named by a checkpoint before its first batch: its index
/// header must be durable by then, or a crash leaves a checkpointed index
/// file with no header, which recovery must refuse.
#[test]
fn a_partition_checkpointed_before_its_first_batch_survives_a_crash() {
    // Its I/O meets the failpoints: none may be set meanwhile.
    let _scenario = fail::FailScenario::setup();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let Life { log, io } = open(root).unwrap();
    log.create_partition(pid(0), PartitionConfig::default())
        .unwrap();
    log.inner.write_checkpoint().unwrap();
    crash(root, log, io);
    // A header no fdatasync covered may come back as zeros of its length.
    let index = crate::recovery::index_path(&root.join("index"), pid(0));
    if std::fs::metadata(&index).unwrap().len() == 0 {
        std::fs::write(&index, [0u8; crate::format::INDEX_HEADER_BYTES as usize]).unwrap();
    }
    let Life { log, io } = open(root).unwrap_or_else(|e| panic!("the log does not reopen: {e}"));
    let p = log.partition(pid(0)).unwrap();
    let out = p.append(batch(1, 5)).unwrap();
    assert_eq!(out.base_offset, 0);
    block_on(out.durable.wait()).unwrap();
    drop(p);
    crash(root, log, io);
    let Life { log, .. } = open(root).unwrap();
    assert_eq!(log.partition(pid(0)).unwrap().offsets().log_end, 1);
    log.shutdown().unwrap();
}

/// Recovery rewrites the header of a partition no checkpoint names yet
/// (created without an fdatasync of it); the checkpoint written at the end
/// of the open names it, so the rewrite must be durable first.
#[test]
fn a_header_rewritten_by_recovery_survives_a_crash_right_after_the_open() {
    // Its I/O meets the failpoints: none may be set meanwhile.
    let _scenario = fail::FailScenario::setup();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let Life { log, io } = open(root).unwrap();
    log.create_partition(pid(0), PartitionConfig::default())
        .unwrap();
    // A crash before any checkpoint: the header was never synced.
    crash(root, log, io);
    let Life { log, io } = open(root).unwrap();
    assert!(log.partition(pid(0)).is_some());
    // The open's checkpoint names it; crash again at once.
    crash(root, log, io);
    let Life { log, .. } = open(root).unwrap();
    assert!(log.partition(pid(0)).is_some());
    log.shutdown().unwrap();
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for ent in std::fs::read_dir(from).unwrap() {
        let ent = ent.unwrap();
        let target = to.join(ent.file_name());
        if ent.file_type().unwrap().is_dir() {
            copy_tree(&ent.path(), &target);
        } else {
            std::fs::copy(ent.path(), &target).unwrap();
        }
    }
}

/// Every batch of every partition, by partition, as read back.
fn contents(log: &CommitLog) -> BTreeMap<PartitionId, (PartitionOffsets, Vec<u8>)> {
    let mut out = BTreeMap::new();
    for id in log.partitions() {
        let p = log.partition(id).unwrap();
        let offsets = p.offsets();
        let mut bytes = Vec::new();
        let mut at = offsets.log_start;
        while at < offsets.log_end {
            let read = p.read(at, 1 << 20).unwrap();
            let Some(last) = crate::batch::parse_replica_payload(&read.records)
                .unwrap()
                .last()
                .map(|b| {
                    let base = crate::format::be_i64(&read.records, b.start).unwrap();
                    base + i64::from(b.last_offset_delta)
                })
            else {
                break;
            };
            bytes.extend_from_slice(&read.records);
            at = last + 1;
        }
        out.insert(id, (offsets, bytes));
    }
    out
}

/// The upgrade of older index files (at the open of a directory an older
/// Weir wrote: version 1 is rewritten, version 2 has its header raised)
/// fails or panics at each of its durable steps; after the crash the
/// directory opens and reads back as a clean upgrade does, and its index
/// files are of the current version.
#[test]
fn a_crash_in_the_index_upgrade_keeps_every_record() {
    let _scenario = fail::FailScenario::setup();
    let v1 = [
        "storage::index_upgrade_sync",
        "storage::index_upgrade_rename",
        "storage::index_upgrade_dir_sync",
    ];
    crash_in_index_upgrade("v1", &v1);
    crash_in_index_upgrade("v4", &["storage::index_version_sync"]);
}

/// [`a_crash_in_the_index_upgrade_keeps_every_record`] on the fixture
/// `generation`, crashing at each of `sites`.
fn crash_in_index_upgrade(generation: &str, sites: &[&str]) {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(generation);
    let clean_dir = tempfile::tempdir().unwrap();
    copy_tree(&fixture, clean_dir.path());
    let clean = open(clean_dir.path()).unwrap();
    let want = contents(&clean.log);
    assert!(!want.is_empty());
    clean.log.shutdown().unwrap();
    assert_index_versions_current(clean_dir.path());
    for (n, &site) in sites.iter().enumerate() {
        for (action, mix) in [
            ("return", None),
            ("panic", None),
            ("return", Some(n as u64)),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let root = dir.path();
            copy_tree(&fixture, root);
            let io = CrashIo::new(root);
            fail::cfg(site, action).unwrap();
            let opened = caught(|| {
                CommitLog::open_with_io(
                    root,
                    config(),
                    Arc::new(ManualClock::default()),
                    io.clone(),
                )
                .map_err(|e| e.to_string())
            });
            fail::remove(site);
            let Err(e) = opened else {
                panic!("{site}={action}: the open never reached it");
            };
            assert!(e.contains(site), "{site}={action}: {e}");
            // The open failed before any thread started: nothing holds the files.
            let image = io.durable.lock().unwrap().crash_image(root, mix).unwrap();
            image.materialize(root).unwrap();
            let reopened = open(root)
                .unwrap_or_else(|e| panic!("{site}={action}: the log does not reopen: {e}"));
            assert!(
                contents(&reopened.log) == want,
                "{site}={action} (mix {mix:?}): the records differ from a clean upgrade's"
            );
            reopened.log.shutdown().unwrap();
            assert_index_versions_current(root);
        }
    }
}

/// Every index file under `root` has a header of the current version.
fn assert_index_versions_current(root: &Path) {
    for ent in std::fs::read_dir(root.join("index")).unwrap() {
        let path = ent.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(
            crate::format::check_index_version(&bytes).unwrap(),
            crate::format::INDEX_VERSION,
            "{}",
            path.display()
        );
    }
}

/// A partition created without an fdatasync of its index header, whose
/// header the crash left as zeros: recovery rewrites it, and the open's
/// checkpoint then names the partition. A second crash right after must
/// not find the zeros again (a checkpointed index file with a bad header is
/// refused), so the rewrite is synced before that checkpoint.
#[test]
fn a_torn_header_rewritten_by_recovery_survives_a_second_crash() {
    let _scenario = fail::FailScenario::setup();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let Life { log, io } = open(root).unwrap();
    log.create_partition(pid(0), PartitionConfig::default())
        .unwrap();
    crash(root, log, io);
    // What the disk kept of the header: its length, not its bytes.
    let index = crate::recovery::index_path(&root.join("index"), pid(0));
    std::fs::write(&index, [0u8; crate::format::INDEX_HEADER_BYTES as usize]).unwrap();
    // The rewrite's own sync failing, or panicking, fails the open and
    // leaves the directory to the next one.
    for action in ["return", "panic"] {
        let io = CrashIo::new(root);
        fail::cfg("storage::index_header_sync", action).unwrap();
        let opened = caught(|| {
            CommitLog::open_with_io(root, config(), Arc::new(ManualClock::default()), io.clone())
                .map_err(|e| e.to_string())
        });
        fail::remove("storage::index_header_sync");
        let e = opened
            .err()
            .unwrap_or_else(|| panic!("{action}: the open never synced"));
        assert!(e.contains("storage::index_header_sync"), "{action}: {e}");
        let image = io.durable.lock().unwrap().crash_image(root, None).unwrap();
        image.materialize(root).unwrap();
    }
    let Life { log, io } = open(root).unwrap();
    assert!(log.partition(pid(0)).is_some());
    crash(root, log, io);
    let Life { log, .. } = open(root).unwrap_or_else(|e| panic!("the log does not reopen: {e}"));
    let p = log.partition(pid(0)).unwrap();
    let out = p.append(batch(1, 5)).unwrap();
    assert_eq!(out.base_offset, 0);
    block_on(out.durable.wait()).unwrap();
    drop(p);
    log.shutdown().unwrap();
}
