//! `weir consume --share-group G`: a share group member (KIP-932,
//! `weir_client::share::ShareMember`), for trying share groups by hand and
//! for scripts (the bundled librdkafka has no share consumer).
//!
//! It prints each record it acquired and acknowledges it with the next
//! request to that partition's leader: `--ack` (accept by default), or
//! reject when `--reject-if` matches the value. Records acquired past
//! `-n` are released, not acknowledged. At the end the acknowledgements
//! still owed are sent as each share session closes, and the member leaves
//! the group.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::ValueEnum;
use kafka_protocol::records::Record;
use uuid::Uuid;
use weir_client::Client;
use weir_client::share::{AckType, ShareMember};

use super::{ConsumeArgs, Format};
use crate::{CliError, Printed, Result};

/// How long one ShareFetch may wait for records.
const FETCH_WAIT_MS: i32 = 500;
/// Records one ShareFetch may acquire.
const FETCH_MAX_RECORDS: i32 = 500;
/// How long the member waits for an assignment without `--follow`.
const JOIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause between heartbeats while no partition is assigned yet.
const UNASSIGNED_PAUSE: Duration = Duration::from_millis(200);

/// How a printed record is acknowledged (`--ack`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Ack {
    /// Processed: the record is done.
    Accept,
    /// Not processed: deliver it again (to this or another member).
    Release,
    /// Not processable: give it up (to the group's dead-letter topic).
    Reject,
}

impl Ack {
    fn ack_type(self) -> AckType {
        match self {
            Ack::Accept => AckType::Accept,
            Ack::Release => AckType::Release,
            Ack::Reject => AckType::Reject,
        }
    }
}

/// Runs `weir consume TOPIC --share-group GROUP`.
pub(super) fn run(
    client: &mut Client,
    args: &ConsumeArgs,
    group: &str,
    stop: &AtomicBool,
) -> Result<()> {
    let reject_if = args.reject_if.as_ref();
    let mut member = ShareMember::join(
        client,
        group,
        &args.topic,
        &Uuid::new_v4().to_string(),
        (FETCH_MAX_RECORDS, FETCH_WAIT_MS),
    )?;
    let started = Instant::now();
    let mut printed = 0u64;
    let mut result = Ok(());
    loop {
        if stop.load(Ordering::SeqCst) || args.count.is_some_and(|n| printed >= n) {
            break;
        }
        let delivered = match member.poll(client) {
            Ok(d) => d,
            Err(e) => {
                result = Err(e.into());
                break;
            }
        };
        if member.assigned().is_empty() {
            if !args.follow && started.elapsed() > JOIN_TIMEOUT {
                result = Err(CliError::Failed(format!(
                    "share group {group} assigned no partition of {} to this member within {} s",
                    args.topic,
                    JOIN_TIMEOUT.as_secs()
                )));
                break;
            }
            std::thread::sleep(UNASSIGNED_PAUSE);
            continue;
        }
        if delivered.is_empty() && !args.follow {
            break;
        }
        for d in delivered {
            let offset = d.record.offset;
            if args.count.is_some_and(|n| printed >= n) || stop.load(Ordering::SeqCst) {
                // Fetched past -n, or after Ctrl-C: not printed, so not done.
                member.acknowledge(d.partition, offset, AckType::Release);
                continue;
            }
            let line = match args.format {
                Format::Text => Ok(text_line(&d.record)),
                Format::Json => json_line(&args.topic, d.partition, &d.record, d.delivery_count),
            };
            let printed_now = line.and_then(|line| crate::print_out(&line));
            match printed_now {
                Ok(Printed::ReaderGone) => {
                    member.acknowledge(d.partition, offset, AckType::Release);
                    stop.store(true, Ordering::SeqCst);
                    continue;
                }
                Ok(_) => {}
                Err(e) => {
                    member.acknowledge(d.partition, offset, AckType::Release);
                    if result.is_ok() {
                        result = Err(e);
                    }
                    stop.store(true, Ordering::SeqCst);
                    continue;
                }
            }
            printed += 1;
            let rejected = reject_if.is_some_and(|re| {
                re.is_match(&String::from_utf8_lossy(
                    d.record.value.as_deref().unwrap_or_default(),
                ))
            });
            let ack = if rejected { Ack::Reject } else { args.ack };
            member.acknowledge(d.partition, offset, ack.ack_type());
        }
    }
    // Owed acknowledgements go out as each session closes; then the member
    // leaves, so its partitions go to the others at once.
    let closed = member.close(client).map_err(CliError::from);
    result.and(closed)
}

fn text_line(record: &Record) -> String {
    let mut line =
        String::from_utf8_lossy(record.value.as_deref().unwrap_or_default()).into_owned();
    line.push('\n');
    line
}

fn json_line(topic: &str, partition: i32, record: &Record, delivery_count: i16) -> Result<String> {
    let optional =
        |bytes: Option<&Bytes>| bytes.map_or(serde_json::Value::Null, |b| crate::bytes_json(b));
    let headers: Vec<serde_json::Value> = record
        .headers
        .iter()
        .map(|(key, value)| {
            serde_json::json!({
                "key": key.as_str(),
                "value": optional(value.as_ref()),
            })
        })
        .collect();
    let line = serde_json::json!({
        "topic": topic,
        "partition": partition,
        "offset": record.offset,
        "timestamp": record.timestamp,
        "key": optional(record.key.as_ref()),
        "value": optional(record.value.as_ref()),
        "headers": headers,
        "delivery_count": delivery_count,
    });
    let mut line = serde_json::to_string(&line).map_err(CliError::Json)?;
    line.push('\n');
    Ok(line)
}
