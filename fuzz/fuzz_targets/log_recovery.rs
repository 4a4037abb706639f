//! Log recovery from arbitrary segment bytes: a real log (one partition,
//! three batches, closed cleanly) has its newest segment torn, overwritten
//! or extended with the input, then is opened again as a broker opens it at
//! start-up (`CommitLog::open`, which recovers), and what it recovered is
//! read back from offset 0. Opening may refuse the data, with an error;
//! neither it nor the reads may panic.
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use kafka_protocol::records::Compression;
use libfuzzer_sys::fuzz_target;
use weir_storage::{CommitLog, LogConfig, PartitionConfig, PartitionId, SystemClock};

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

/// The log every input starts from, written once.
fn base() -> &'static tempfile::TempDir {
    static BASE: OnceLock<tempfile::TempDir> = OnceLock::new();
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
        dir
    })
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

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let dir = scratch();
    copy_tree(base().path(), dir.path()).expect("the base log copies");
    let segment = newest_segment(dir.path()).expect("the base log has a segment");
    let mut bytes = std::fs::read(&segment).expect("the segment reads");
    let at = |b: &[u8]| usize::from(u16::from_le_bytes([b[0], b[1]]));
    match mode % 3 {
        // A tail the broker never wrote.
        0 => bytes.extend_from_slice(rest),
        // Bytes overwritten in place (a bad sector, a stray write).
        1 if rest.len() >= 2 => {
            let from = at(rest) % bytes.len().max(1);
            for (i, b) in rest[2..].iter().enumerate() {
                match bytes.get_mut(from + i) {
                    Some(slot) => *slot = *b,
                    None => bytes.push(*b),
                }
            }
        }
        // Torn, then followed by the input.
        2 if rest.len() >= 2 => {
            bytes.truncate(at(rest) % bytes.len().max(1));
            bytes.extend_from_slice(&rest[2..]);
        }
        _ => return,
    }
    std::fs::write(&segment, &bytes).expect("the segment writes");
    let Ok((log, _)) = CommitLog::open(dir.path(), LogConfig::default(), Arc::new(SystemClock))
    else {
        return;
    };
    if let Ok(partition) = log.create_partition(id(), PartitionConfig::default()) {
        let mut offset = 0;
        for _ in 0..64 {
            match partition.read(offset, 1 << 20) {
                Ok(read) if !read.records.is_empty() => {
                    let next = weir_storage::batches(&read.records)
                        .map_while(Result::ok)
                        .map(|(h, _)| h.last_offset() + 1)
                        .last();
                    match next {
                        Some(next) if next > offset => offset = next,
                        _ => break,
                    }
                }
                _ => break,
            }
        }
    }
    let _ = log.shutdown();
});
