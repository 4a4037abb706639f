//! Helpers shared by the storage integration tests: real RecordBatch v2
//! bytes built with kafka-protocol's encoder, and decoding of what a read returns.

#![allow(dead_code)]

use bytes::{Bytes, BytesMut};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

/// One batch whose records carry `values`, with timestamps `timestamps` (or 0).
pub fn batch(values: &[Bytes], timestamps: &[i64], compression: Compression) -> Bytes {
    let records: Vec<Record> = values
        .iter()
        .enumerate()
        .map(|(i, v)| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // The encoder keeps records in one batch while offset - sequence is constant.
            sequence: i as i32 - 1,
            timestamp: timestamps.get(i).copied().unwrap_or(0),
            key: None,
            value: Some(v.clone()),
            headers: IndexMap::new(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression,
        },
    )
    .unwrap();
    buf.freeze()
}

/// (offset, value) of every record in concatenated batches.
pub fn decode(mut bytes: Bytes) -> Vec<(i64, Bytes)> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let set = RecordBatchDecoder::decode(&mut bytes).unwrap();
        for r in set.records {
            out.push((r.offset, r.value.unwrap_or_default()));
        }
    }
    out
}

/// The batch as the log stores it: base offset and leader epoch (0) patched.
pub fn stored(b: &Bytes, base_offset: i64) -> Vec<u8> {
    let mut v = b.to_vec();
    v[0..8].copy_from_slice(&base_offset.to_be_bytes());
    v[12..16].copy_from_slice(&0i32.to_be_bytes());
    v
}

/// Run a future to completion on a private runtime.
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
}

/// One life of a crash-test child: run this test binary's `test_name` again
/// as a child process with `child_env` naming `dir`, hand each line it prints
/// to `on_line`, and SIGKILL it once `on_line` has returned true `kill_after`
/// times (or at `deadline`). Lines the child printed before it died are
/// handed over too. Panics if the child exits on its own.
pub fn run_child_until_killed(
    test_name: &str,
    child_env: &str,
    dir: &std::path::Path,
    kill_after: usize,
    deadline: std::time::Instant,
    mut on_line: impl FnMut(&str) -> bool,
) {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    let mut proc = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test_name, "--nocapture"])
        .env(child_env, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = proc.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = 0;
    while seen < kill_after && Instant::now() < deadline {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(line) => {
                if on_line(&line) {
                    seen += 1;
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => panic!("the child exited on its own"),
        }
    }
    // std's Child::kill sends SIGKILL on Unix (the workspace forbids unsafe libc calls).
    proc.kill().unwrap();
    proc.wait().unwrap();
    reader.join().unwrap();
    while let Ok(line) = rx.try_recv() {
        on_line(&line);
    }
}
