//! A full disk, end to end (issue 7, "A full disk"): a real `weir serve`
//! whose data directory is a small tmpfs, and a real librdkafka producer.
//!
//! - A produce that cannot be written is answered with KAFKA_STORAGE_ERROR at
//!   once (the producer runs with `retries=0`, so its delivery report carries
//!   the broker's first answer; with retries librdkafka would retry this
//!   retriable code until `message.timeout.ms`, as against Kafka).
//! - The log stays poisoned for writes, but deleting a topic gives its
//!   segments' space back while the broker runs.
//! - A start on a 100% full disk fails with a message that says what is safe
//!   to remove; once there is space, a restart recovers by itself, writes
//!   succeed, and every acknowledged record is still there.
//!
//! Mounting the tmpfs needs root; without it the test fails and says so.

// Test code: a failed step should panic and fail the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, bail};
use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;

use common::{Broker, CLIENT_TIMEOUT};

const TMPFS_BYTES: u64 = 8 << 20;
const SEGMENT_BYTES: u64 = 256 << 10;
const DOOMED_RECORDS: usize = 200;
const RECORD_BYTES: usize = 10 << 10;
/// How long the broker may take to notice a deleted topic and free its segments.
const RECLAIM_TIMEOUT: Duration = Duration::from_secs(30);

/// A tmpfs mounted on a directory for the test's lifetime.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    fn mount(dir: &Path, bytes: u64) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(dir)
            .output()
            .expect("cannot run mount(8)");
        assert!(
            out.status.success(),
            "this test mounts a {bytes}-byte tmpfs and must run as root: mount failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self {
            dir: dir.to_path_buf(),
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: the broker may still hold files open until it is killed.
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

/// Write zeros to `path` until the filesystem is full.
fn fill_disk(path: &Path) -> u64 {
    let mut file = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 64 << 10];
    let mut written = 0;
    loop {
        match file.write(&chunk) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(e) if e.raw_os_error() == Some(28) => break,
            Err(e) => panic!("filling the disk: {e}"),
        }
    }
    // Pages the last partial write allocated stay allocated; flush nothing more.
    written
}

fn log_bytes(data_dir: &Path) -> u64 {
    std::fs::read_dir(data_dir.join("log"))
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// The log position the checkpoint on disk vouches for.
fn checkpoint_position(data_dir: &Path) -> u64 {
    std::fs::read(data_dir.join("checkpoint"))
        .ok()
        .and_then(|b| Some(u64::from_be_bytes(b.get(16..24)?.try_into().ok()?)))
        .unwrap_or(0)
}

/// The base position of the newest (active) segment.
fn active_segment_base(data_dir: &Path) -> u64 {
    std::fs::read_dir(data_dir.join("log"))
        .unwrap()
        .filter_map(|e| {
            e.ok()?
                .file_name()
                .to_str()?
                .strip_suffix(".log")?
                .parse()
                .ok()
        })
        .max()
        .unwrap_or(0)
}

/// A producer context that keeps each delivery's error code.
#[derive(Default)]
struct Codes(Mutex<Vec<Result<i64, RDKafkaErrorCode>>>);

impl ClientContext for Codes {}

impl ProducerContext for Codes {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let r = match result {
            Ok(m) => Ok(m.offset()),
            Err((e, _)) => Err(e.rdkafka_error_code().unwrap_or(RDKafkaErrorCode::Unknown)),
        };
        self.0.lock().unwrap().push(r);
    }
}

fn producer(bootstrap: &str, retries: bool) -> BaseProducer<Codes> {
    let mut config: ClientConfig = common::producer_config(bootstrap);
    if !retries {
        config.set("retries", "0");
    }
    config.create_with_context(Codes::default()).unwrap()
}

/// Produce one record and return its delivery result.
fn produce_one(
    p: &BaseProducer<Codes>,
    topic: &str,
    value: &[u8],
) -> Result<i64, RDKafkaErrorCode> {
    p.send(
        BaseRecord::<[u8], [u8]>::to(topic)
            .partition(0)
            .payload(value),
    )
    .map_err(|(e, _)| e)
    .unwrap();
    p.flush(CLIENT_TIMEOUT).unwrap();
    let mut got = p.context().0.lock().unwrap();
    assert_eq!(got.len(), 1, "one delivery report");
    got.pop().unwrap()
}

fn delete_topic(bootstrap: &str, topic: &str) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let admin = common::admin(bootstrap)?;
    let results = runtime.block_on(admin.delete_topics(&[topic], &common::admin_options()))?;
    for r in results {
        if let Err((name, code)) = r {
            bail!("cannot delete {name}: {code:?}");
        }
    }
    Ok(())
}

#[test]
fn a_full_disk_refuses_writes_at_once_frees_deleted_topics_and_recovers() -> anyhow::Result<()> {
    let segment_bytes = SEGMENT_BYTES.to_string();
    let mut broker = Broker::start(&[
        "--segment-bytes",
        &segment_bytes,
        "--set",
        "log.retention.check.interval.ms=200",
    ])?;
    // The data directory moves onto a fresh tmpfs before the broker's real life.
    broker.stop()?;
    let data = broker.data_dir();
    let _tmpfs = Tmpfs::mount(&data, TMPFS_BYTES);
    broker.restart()?;
    let bootstrap = broker.bootstrap();
    common::create_topic_blocking(&bootstrap, "doomed", 1, &[])?;
    common::create_topic_blocking(&bootstrap, "kept", 1, &[])?;

    // Several segments of the topic that will be deleted, then acknowledged records to keep.
    let p = producer(&bootstrap, true);
    let big = vec![b'd'; RECORD_BYTES];
    for _ in 0..DOOMED_RECORDS {
        assert!(produce_one(&p, "doomed", &big).is_ok());
    }
    let mut acked = Vec::new();
    for i in 0..20 {
        let value = format!("kept-{i}").into_bytes();
        assert_eq!(produce_one(&p, "kept", &value), Ok(i));
        acked.push(value);
    }
    // Segment deletion needs the doomed segments below a checkpoint.
    common::wait_until(
        CLIENT_TIMEOUT,
        "a checkpoint past the closed segments",
        || Ok(checkpoint_position(&data) >= active_segment_base(&data)),
    )?;

    // (a) The disk fills: the next produce is refused with KAFKA_STORAGE_ERROR.
    let filler = data.join("filler");
    fill_disk(&filler);
    let strict = producer(&bootstrap, false);
    let mut refused = None;
    let mut not_acked = vec![b"still refused".to_vec()];
    for i in 0..64 {
        let value = format!("overflow-{i}-").into_bytes().repeat(4096);
        match produce_one(&strict, "kept", &value) {
            Ok(_) => acked.push(value),
            Err(code) => {
                refused = Some(code);
                not_acked.push(value);
                break;
            }
        }
    }
    assert_eq!(refused, Some(RDKafkaErrorCode::KafkaStorageError));

    // (b) With the filler gone, deleting a topic frees its segments while
    // the broker runs, and writes stay refused (the log is poisoned).
    std::fs::remove_file(&filler)?;
    let before = log_bytes(&data);
    delete_topic(&bootstrap, "doomed")?;
    common::wait_until(
        RECLAIM_TIMEOUT,
        "the deleted topic's segments to go",
        || Ok(log_bytes(&data) + (DOOMED_RECORDS * RECORD_BYTES / 2) as u64 <= before),
    )
    .with_context(|| broker.stderr_tail())?;
    assert_eq!(
        produce_one(&strict, "kept", b"still refused"),
        Err(RDKafkaErrorCode::KafkaStorageError)
    );
    drop((p, strict));

    // (c) A start on a 100% full disk refuses, naming what is safe to remove.
    fill_disk(&filler);
    broker.sigkill()?;
    let err = broker
        .restart()
        .expect_err("a start on a full disk must fail");
    let text = format!("{err:#}");
    assert!(
        text.contains("is full") && text.contains("checkpoint.tmp"),
        "{text}"
    );

    // Space comes back: the restart recovers by itself, writes succeed, and
    // every acknowledged record is there. (A refused record may be there too:
    // its producer was told it failed, not that it was never written.)
    std::fs::remove_file(&filler)?;
    broker.restart()?;
    let bootstrap = broker.bootstrap();
    let p = producer(&bootstrap, true);
    assert!(produce_one(&p, "kept", b"after").is_ok());
    acked.push(b"after".to_vec());
    let read = common::read_to_high_watermark(&bootstrap, "kept", &[0], CLIENT_TIMEOUT)?;
    let values: Vec<Vec<u8>> = read[&0]
        .iter()
        .map(|m| m.payload().unwrap_or_default().to_vec())
        .filter(|v| !not_acked.contains(v))
        .collect();
    assert_eq!(values, acked);
    Ok(())
}
