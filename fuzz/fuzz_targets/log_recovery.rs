//! Log recovery from damaged files: a real log (one partition, ten
//! batches, closed cleanly) has one of its files torn, overwritten or
//! extended with the input, then is opened again as a broker opens it at
//! start-up (`CommitLog::open`, which recovers), and what it recovered is
//! read back from its log start.
//!
//! The input's first byte says what is damaged and how: `% 3` the change
//! (0: the input is appended; 1: it overwrites the file from the position
//! in its next two bytes; 2: the file is torn at that position, then the
//! input appended), `/ 3 % 4` the file ([`DAMAGED`]: the newest segment,
//! the partition's index, the checkpoint, the leader epochs), and `/ 12 % 2`
//! whether the file's checksums are then computed again over the damage
//! (a stray write no checksum catches, as a bug would make one). Bytes 0 to
//! 2 damage the newest segment as this target did before it knew the other
//! files, so its older corpus means what it meant.
//!
//! Opening may refuse the data, with an error; neither it nor the reads may
//! panic or allocate without bound. A read may fail, but every batch it
//! returns is a batch the log held, byte for byte, unless a consumer
//! refuses it (a bad CRC or magic: damage the consumer sees) or it lies past
//! the log's end (a batch the input appended). The one field not compared
//! is the partition leader epoch: no CRC covers it, and only the
//! leader-epoch cache could tell a damaged one.
#![no_main]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use kafka_protocol::records::Compression;
use libfuzzer_sys::fuzz_target;
use weir_storage::{
    CommitLog, LogConfig, Partition, PartitionConfig, PartitionId, RecordBatchHeader, SystemClock,
};

/// The most reads of one recovered log: more than it has batches.
const READS_MAX: usize = 64;
/// Bytes one read asks for.
const READ_BYTES_MAX: usize = 1 << 20;
/// Bytes of an index file's header, and of each of its entries
/// (docs/format.md).
const INDEX_HEADER_BYTES: usize = 64;
const INDEX_ENTRY_BYTES: usize = 64;
/// Bytes of a CRC-32C: the last of each index entry (over the rest of it),
/// and of the checkpoint and the leader epochs (over all before it).
const CRC_BYTES: usize = 4;
/// The magic byte of a RecordBatch v2.
const RECORD_BATCH_MAGIC: i8 = 2;

/// A file of the log's directory that an input damages.
#[derive(Clone, Copy, Debug)]
enum Damaged {
    /// `log/<position>.log`, the newest commit-log segment.
    NewestSegment,
    /// `index/<topic>-<partition>.idx`, the partition's queue index.
    Index,
    /// `checkpoint`, the recovery checkpoint.
    Checkpoint,
    /// `leader-epochs`, every partition's leader-epoch cache.
    LeaderEpochs,
}

/// The files an input may damage, by `mode / 3 % 4`.
const DAMAGED: [Damaged; 4] = [
    Damaged::NewestSegment,
    Damaged::Index,
    Damaged::Checkpoint,
    Damaged::LeaderEpochs,
];

impl Damaged {
    /// Where the file is in the log's directory `dir`.
    fn path(self, dir: &Path) -> PathBuf {
        match self {
            Damaged::NewestSegment => newest_segment(dir).expect("the base log has a segment"),
            Damaged::Index => dir.join("index").join(format!(
                "{}-{}.idx",
                id().topic_id.hyphenated(),
                id().partition
            )),
            Damaged::Checkpoint => dir.join("checkpoint"),
            Damaged::LeaderEpochs => dir.join("leader-epochs"),
        }
    }

    /// Computes the file's checksums again over `bytes`. A segment's are
    /// left as they are: recovery checks the tail's entry CRCs, and the
    /// input may forge them itself.
    fn reseal(self, bytes: &mut [u8]) {
        match self {
            Damaged::NewestSegment => {}
            Damaged::Index => {
                let entries = bytes.get_mut(INDEX_HEADER_BYTES..).unwrap_or_default();
                for entry in entries.chunks_exact_mut(INDEX_ENTRY_BYTES) {
                    let (body, crc) = entry.split_at_mut(INDEX_ENTRY_BYTES - CRC_BYTES);
                    crc.copy_from_slice(&crc32c::crc32c(body).to_be_bytes());
                }
            }
            Damaged::Checkpoint | Damaged::LeaderEpochs => {
                if let Some(at) = bytes.len().checked_sub(CRC_BYTES) {
                    let (body, crc) = bytes.split_at_mut(at);
                    crc.copy_from_slice(&crc32c::crc32c(body).to_be_bytes());
                }
            }
        }
    }
}

fn id() -> PartitionId {
    PartitionId {
        topic_id: uuid::Uuid::from_u128(1),
        partition: 0,
    }
}

/// A folder on memory-backed storage when there is one: the target opens
/// a log per input, and its fsyncs should not reach a disk.
fn scratch() -> tempfile::TempDir {
    match Path::new("/dev/shm").is_dir() {
        true => tempfile::tempdir_in("/dev/shm"),
        false => tempfile::tempdir(),
    }
    .expect("a scratch folder")
}

/// The log every input starts from, and what reads of it return.
struct Base {
    dir: tempfile::TempDir,
    /// Every batch, as a read returns it, by base offset.
    batches: BTreeMap<i64, Vec<u8>>,
    /// The offset after the last record.
    end_offset: i64,
}

/// The base log, written once, closed, opened again and read back whole.
fn base() -> &'static Base {
    static BASE: OnceLock<Base> = OnceLock::new();
    BASE.get_or_init(|| {
        let dir = scratch();
        let (log, _) = CommitLog::open(dir.path(), LogConfig::default(), Arc::new(SystemClock))
            .expect("a fresh log opens");
        let partition = log
            .create_partition(id(), PartitionConfig::default())
            .expect("a partition");
        for count in [3, 5, 2] {
            let batch = weir_fuzz::batch(count, Compression::None);
            partition.append(batch).expect("a valid batch appends");
        }
        log.shutdown().expect("the log shuts down");
        check_damaged_covers(dir.path());

        let copy = scratch();
        copy_tree(dir.path(), copy.path()).expect("the base log copies");
        let (log, _) = CommitLog::open(copy.path(), LogConfig::default(), Arc::new(SystemClock))
            .expect("the base log opens again");
        let partition = log.partition(id()).expect("the base log has its partition");
        let batches: BTreeMap<i64, Vec<u8>> = read_back(&partition)
            .into_iter()
            .map(|batch| (header(&batch).base_offset, batch))
            .collect();
        log.shutdown().expect("the base log shuts down again");
        let end_offset = batches
            .values()
            .map(|batch| header(batch).last_offset() + 1)
            .max()
            .expect("the base log reads back");
        assert_eq!(end_offset, 10, "the base log reads back its ten records");
        Base {
            dir,
            batches,
            end_offset,
        }
    })
}

/// Every file of the base log is one [`DAMAGED`] names: a new kind of file
/// in the storage engine's directory should be damaged here too.
fn check_damaged_covers(dir: &Path) {
    let mut files = Vec::new();
    list_files(dir, &mut files).expect("the base log lists");
    for file in files {
        assert!(
            DAMAGED.iter().any(|damaged| damaged.path(dir) == file),
            "the base log holds {}, which this target never damages",
            file.display()
        );
    }
}

fn list_files(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            list_files(&entry.path(), out)?;
        } else {
            out.push(entry.path());
        }
    }
    Ok(())
}

fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// The newest commit-log segment under `dir`.
fn newest_segment(dir: &Path) -> Option<PathBuf> {
    let mut segments: Vec<PathBuf> = std::fs::read_dir(dir.join("log"))
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    segments.sort();
    segments.pop()
}

/// Changes `bytes` with `input` as `change` says (see the module's doc);
/// `false` when the input is too short for it.
fn damage(bytes: &mut Vec<u8>, change: u8, input: &[u8]) -> bool {
    // Changes 1 and 2 take a position in the file from the input's first
    // two bytes.
    let located = input.split_first_chunk::<2>().map(|(at, rest)| {
        let at = usize::from(u16::from_le_bytes(*at)) % bytes.len().max(1);
        (at, rest)
    });
    match (change, located) {
        // A tail the broker never wrote.
        (0, _) => bytes.extend_from_slice(input),
        // Bytes overwritten in place (a bad sector, a stray write).
        (1, Some((from, rest))) => {
            for (i, b) in rest.iter().enumerate() {
                match bytes.get_mut(from + i) {
                    Some(slot) => *slot = *b,
                    None => bytes.push(*b),
                }
            }
        }
        // Torn, then followed by the input.
        (2, Some((at, rest))) => {
            bytes.truncate(at);
            bytes.extend_from_slice(rest);
        }
        _ => return false,
    }
    true
}

/// The parsed header of a batch a read returned.
fn header(batch: &[u8]) -> RecordBatchHeader {
    RecordBatchHeader::parse(batch).expect("a read returns whole batches")
}

/// Whether a consumer refuses the batch as damaged: its magic is not 2, or
/// its CRC-32C does not cover its bytes. (The CRC covers neither the magic
/// nor the base offset; the storage checks the base offset as it reads.)
fn consumer_refuses(batch: &[u8]) -> bool {
    let header = header(batch);
    let covered = batch
        .get(RecordBatchHeader::ATTRIBUTES_AT..)
        .unwrap_or_default();
    header.magic != RECORD_BATCH_MAGIC || header.crc != crc32c::crc32c(covered)
}

/// Whether two batches are the same but for their partition leader epoch.
fn same_but_epoch(batch: &[u8], other: &[u8]) -> bool {
    let epoch_at = RecordBatchHeader::PARTITION_LEADER_EPOCH_AT;
    let after_epoch = RecordBatchHeader::MAGIC_AT;
    batch.get(..epoch_at) == other.get(..epoch_at)
        && batch.get(after_epoch..) == other.get(after_epoch..)
}

/// The batches a partition returns from its log start on, read as a
/// consumer reads them, until a read fails, is empty or makes no progress.
fn read_back(partition: &Partition) -> Vec<Vec<u8>> {
    let mut batches = Vec::new();
    let mut offset = partition.offsets().log_start;
    for _ in 0..READS_MAX {
        let Ok(read) = partition.read(offset, READ_BYTES_MAX) else {
            break;
        };
        let before = batches.len();
        batches.extend(
            weir_storage::batches(&read.records)
                .map_while(Result::ok)
                .map(|(_, batch)| batch.to_vec()),
        );
        let next = batches
            .get(before..)
            .and_then(<[Vec<u8>]>::last)
            .map(|batch| header(batch).last_offset() + 1);
        match next {
            Some(next) if next > offset => offset = next,
            _ => break,
        }
    }
    batches
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, input)) = data.split_first() else {
        return;
    };
    let damaged = DAMAGED[usize::from(mode / 3) % DAMAGED.len()];
    let reseal = (mode / 12) % 2 == 1;
    let base = base();
    let dir = scratch();
    copy_tree(base.dir.path(), dir.path()).expect("the base log copies");
    let path = damaged.path(dir.path());
    let mut bytes = std::fs::read(&path).expect("the file reads");
    if !damage(&mut bytes, mode % 3, input) {
        return;
    }
    if reseal {
        damaged.reseal(&mut bytes);
    }
    std::fs::write(&path, &bytes).expect("the file writes");

    let Ok((log, _)) = CommitLog::open(dir.path(), LogConfig::default(), Arc::new(SystemClock))
    else {
        return;
    };
    let partition = log
        .partition(id())
        .expect("a log that opens keeps the partition whose index it holds");
    for batch in read_back(&partition) {
        let base_offset = header(&batch).base_offset;
        if consumer_refuses(&batch) || base_offset >= base.end_offset {
            continue;
        }
        assert!(
            base.batches
                .get(&base_offset)
                .is_some_and(|held| same_but_epoch(&batch, held)),
            "a read returned a batch at offset {base_offset} that the log did not hold, \
             with a valid CRC"
        );
    }
    let _ = log.shutdown();
});
