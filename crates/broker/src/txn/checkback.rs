//! Check-back: RocketMQ's transaction check, over Kafka transactions.
//!
//! Kafka aborts a transaction whose producer went away once it passes its
//! timeout. An application whose local work (a database row, a payment)
//! committed just before the producer died then loses the messages that
//! announce it. With `weir.txn.checkback.url` set, the coordinator asks
//! the application instead: it POSTs the transaction as JSON (its id,
//! producer, partitions, and the values of the [`KEY_HEADER`] header in
//! its records, which is how the application finds its local work), and
//! the answer `commit`, `abort` or `unknown` decides it. `unknown` (and a
//! check that failed: a timeout, an HTTP error, an answer it cannot read)
//! is asked again with backoff, up to `weir.txn.checkback.max.checks`;
//! then `weir.txn.checkback.default.action` decides.
//!
//! This module owns the HTTP exchange and the reading of a transaction's
//! keys from the log; `mod.rs` decides when to ask and applies answers.
//! Each check runs in its own task and holds no lock while it waits, so a
//! slow or dead service delays only the transactions it is asked about.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::records::{Compression, RecordBatchDecoder};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use weir_storage::{Partition, RecordBatchHeader, batches, decompress_records};

use super::records::TxnValue;
use crate::config::CheckbackConfig;

/// The record header whose values the service is sent: the application
/// puts there what identifies its local work (an order id, say).
pub(crate) const KEY_HEADER: &str = "weir.txn-key";
/// Most distinct keys one check sends; the rest are left out (and the
/// leaving out logged).
const KEYS_MAX: usize = 1_000;
/// Longest key sent; a longer value is left out.
const KEY_BYTES_MAX: usize = 1_024;
/// Most log bytes read per partition to find a transaction's keys.
const SCAN_BYTES_MAX: usize = 64 << 20;
/// Bytes read per step of that scan.
const SCAN_STEP_BYTES: usize = 1 << 20;
/// The most bytes one batch's records may decompress to in the scan.
const DECOMPRESSED_BYTES_MAX: usize = 64 << 20;
/// Longest answer read from the service.
const ANSWER_BYTES_MAX: usize = 64 * 1024;
/// Checks in flight to one URL at a time; the others wait their turn, so a
/// service that hangs holds a bounded number of connections.
const CHECKS_IN_FLIGHT_PER_URL: usize = 16;

/// Why the coordinator asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reason {
    /// The transaction ran past its `transaction.timeout.ms`.
    Timeout,
    /// The coordinator found it open when it loaded the id's partition
    /// (after a restart, or on taking the partition over).
    Recovered,
}

impl Reason {
    fn as_str(self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::Recovered => "recovered",
        }
    }
}

/// What the service answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    Commit,
    Abort,
    /// Ask again later.
    Unknown,
}

/// A check that got no answer to act on.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CheckError {
    #[error("cannot make an HTTP client: {0}")]
    Client(String),
    #[error("{0}")]
    Http(#[from] reqwest::Error),
    #[error("the service answered HTTP {0}")]
    Status(reqwest::StatusCode),
    #[error("the answer is longer than {ANSWER_BYTES_MAX} bytes")]
    TooLong,
    #[error(r#"the answer is not {{"action": "commit" | "abort" | "unknown"}}: {0}"#)]
    Malformed(String),
}

/// What the service is sent.
#[derive(Debug, Serialize)]
struct CheckRequest<'a> {
    transactional_id: &'a str,
    producer_id: i64,
    producer_epoch: i16,
    partitions: Vec<PartitionRef<'a>>,
    keys: &'a [String],
    /// 1 for the first check of this transaction.
    check: u32,
    reason: &'static str,
}

#[derive(Debug, Serialize)]
struct PartitionRef<'a> {
    topic: &'a str,
    partition: i32,
}

#[derive(Debug, Deserialize)]
struct CheckAnswer {
    action: String,
}

/// The HTTP side of check-back: one client, and a bound on the checks in
/// flight per URL.
pub(crate) struct Checkback {
    client: Result<reqwest::Client, String>,
    in_flight: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl Checkback {
    pub(crate) fn new(config: &CheckbackConfig) -> Self {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(config.timeout_ms))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| e.to_string());
        Self {
            client,
            in_flight: Mutex::new(HashMap::new()),
        }
    }

    fn permits(&self, url: &str) -> Arc<Semaphore> {
        let mut map = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(url.to_string())
            .or_insert_with(|| Arc::new(Semaphore::new(CHECKS_IN_FLIGHT_PER_URL)))
            .clone()
    }

    /// Ask `url` about `id`'s transaction `value`.
    pub(crate) async fn ask(
        &self,
        url: &str,
        id: &str,
        value: &TxnValue,
        keys: &[String],
        check: u32,
        reason: Reason,
    ) -> Result<Action, CheckError> {
        let client = self
            .client
            .as_ref()
            .map_err(|e| CheckError::Client(e.clone()))?;
        let request = CheckRequest {
            transactional_id: id,
            producer_id: value.producer_id,
            producer_epoch: value.producer_epoch,
            partitions: value
                .partitions
                .iter()
                .map(|(topic, partition)| PartitionRef {
                    topic,
                    partition: *partition,
                })
                .collect(),
            keys,
            check,
            reason: reason.as_str(),
        };
        let permits = self.permits(url);
        // The semaphore is never closed.
        let _permit = permits.acquire().await.ok();
        let mut response = client.post(url).json(&request).send().await?;
        if !response.status().is_success() {
            return Err(CheckError::Status(response.status()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await? {
            if body.len() + chunk.len() > ANSWER_BYTES_MAX {
                return Err(CheckError::TooLong);
            }
            body.extend_from_slice(&chunk);
        }
        parse_answer(&body)
    }
}

/// Read the service's answer.
fn parse_answer(body: &[u8]) -> Result<Action, CheckError> {
    let answer: CheckAnswer =
        serde_json::from_slice(body).map_err(|e| CheckError::Malformed(e.to_string()))?;
    match answer.action.to_ascii_lowercase().as_str() {
        "commit" => Ok(Action::Commit),
        "abort" => Ok(Action::Abort),
        "unknown" => Ok(Action::Unknown),
        other => Err(CheckError::Malformed(format!("action {other:?}"))),
    }
}

/// The distinct [`KEY_HEADER`] values in `producer_id`'s open transaction
/// on each of `partitions` (those this broker holds), at most [`KEYS_MAX`].
/// Blocks on file I/O.
pub(crate) fn keys_of(partitions: &[Partition], producer_id: i64, id: &str) -> (Vec<String>, bool) {
    let mut keys = BTreeSet::new();
    let mut complete = true;
    for partition in partitions {
        if let Err(detail) = keys_in(partition, producer_id, &mut keys) {
            tracing::warn!(transactional_id = %id, partition = ?partition.id(), %detail,
                "check-back: could not read every key of the transaction; asking with those found");
            complete = false;
        }
    }
    (keys.into_iter().collect(), complete)
}

/// Add `producer_id`'s keys in its open transaction on `partition`.
fn keys_in(
    partition: &Partition,
    producer_id: i64,
    keys: &mut BTreeSet<String>,
) -> Result<(), String> {
    let Some(first) = partition.open_transaction(producer_id) else {
        return Ok(());
    };
    let end = partition.offsets().log_end;
    let mut next = first;
    let mut scanned = 0usize;
    while next < end {
        if scanned >= SCAN_BYTES_MAX {
            return Err(format!(
                "stopped after {SCAN_BYTES_MAX} bytes at offset {next}"
            ));
        }
        let read = partition
            .read_replica(next, SCAN_STEP_BYTES)
            .map_err(|e| e.to_string())?;
        if read.records.is_empty() {
            break;
        }
        scanned += read.records.len();
        let before = next;
        for framed in batches(&read.records) {
            let (header, batch) = framed.map_err(|e| e.to_string())?;
            next = next.max(header.last_offset().saturating_add(1));
            if header.producer_id != producer_id
                || !header.is_transactional()
                || header.is_control()
            {
                continue;
            }
            let mut batch = read.records.slice_ref(batch);
            for value in header_values(&header, &mut batch)? {
                if keys.len() >= KEYS_MAX {
                    return Err(format!("more than {KEYS_MAX} distinct keys"));
                }
                keys.insert(value);
            }
        }
        if next <= before {
            return Err(format!("reading made no progress at offset {next}"));
        }
    }
    Ok(())
}

/// The [`KEY_HEADER`] values of one batch's records, decompressed within
/// [`DECOMPRESSED_BYTES_MAX`].
fn header_values(header: &RecordBatchHeader, batch: &mut Bytes) -> Result<Vec<String>, String> {
    let codec = header.codec();
    let decompress = |section: &mut Bytes, _: Compression| {
        decompress_records(codec, section, DECOMPRESSED_BYTES_MAX)
            .map(|records| Bytes::copy_from_slice(&records))
            .map_err(anyhow::Error::new)
    };
    let set = RecordBatchDecoder::decode_with_custom_compression(batch, Some(decompress))
        .map_err(|e| format!("batch at {}: {e}", header.base_offset))?;
    Ok(set
        .records
        .iter()
        .flat_map(|r| r.headers.iter())
        .filter(|(name, _)| name.as_str() == KEY_HEADER)
        .filter_map(|(_, value)| value.as_ref())
        .filter(|v| v.len() <= KEY_BYTES_MAX)
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect())
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;
    use kafka_protocol::protocol::StrBytes;
    use kafka_protocol::records::{Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType};

    use super::*;
    use crate::admin::testing::broker_with;
    use crate::config::BrokerConfig;

    /// One batch from `producer` of records with these `weir.txn-key`
    /// values (`None`: no such header).
    fn batch(
        producer: i64,
        transactional: bool,
        keys: &[Option<&str>],
        compression: Compression,
    ) -> Bytes {
        let records: Vec<Record> = keys
            .iter()
            .enumerate()
            .map(|(i, key)| Record {
                transactional,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: -1,
                producer_id: producer,
                producer_epoch: 0,
                timestamp_type: TimestampType::Creation,
                offset: i64::try_from(i).unwrap(),
                sequence: -1,
                timestamp: 0,
                key: None,
                value: Some(Bytes::from_static(b"v")),
                headers: key
                    .iter()
                    .map(|k| {
                        (
                            StrBytes::from_static_str(KEY_HEADER),
                            Some(Bytes::copy_from_slice(k.as_bytes())),
                        )
                    })
                    .chain([(
                        StrBytes::from_static_str("other"),
                        Some(Bytes::from_static(b"x")),
                    )])
                    .collect(),
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

    #[test]
    fn a_transactions_keys_are_read_from_its_own_records_only() {
        let t = broker_with(BrokerConfig::default());
        t.broker
            .create_topic("t", 1, -1, Default::default(), false)
            .unwrap();
        let partition = t.broker.partition("t", 0).unwrap();
        // Before the transaction, another producer's, and a plain batch.
        partition
            .append(batch(7, false, &[Some("before")], Compression::None))
            .unwrap();
        partition
            .append(batch(
                7,
                true,
                &[Some("order-1"), None, Some("order-2")],
                Compression::None,
            ))
            .unwrap();
        partition
            .append(batch(8, true, &[Some("theirs")], Compression::None))
            .unwrap();
        partition
            .append(batch(
                7,
                true,
                &[Some("order-3"), Some("order-1")],
                Compression::Gzip,
            ))
            .unwrap();
        let (keys, complete) = keys_of(std::slice::from_ref(&partition), 7, "tx");
        assert!(complete);
        assert_eq!(keys, ["order-1", "order-2", "order-3"]);
        let (none, complete) = keys_of(&[partition], 9, "tx");
        assert!(complete && none.is_empty(), "no open transaction, no keys");
    }

    #[test]
    fn answers_are_read_strictly() {
        assert_eq!(
            parse_answer(br#"{"action":"commit"}"#).unwrap(),
            Action::Commit
        );
        assert_eq!(
            parse_answer(br#"{"action":"ABORT","note":"declined"}"#).unwrap(),
            Action::Abort
        );
        assert_eq!(
            parse_answer(br#"{"action":"unknown"}"#).unwrap(),
            Action::Unknown
        );
        for bad in [&b"commit"[..], br#"{"action":"maybe"}"#, br#"{}"#, b""] {
            assert!(
                matches!(parse_answer(bad), Err(CheckError::Malformed(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn the_longest_matching_prefix_names_the_url() {
        let config = CheckbackConfig {
            url: CheckbackConfig::parse_url("http://default/check").unwrap(),
            prefixes: CheckbackConfig::parse_prefixes(
                "orders-=http://orders/check, orders-eu-=http://eu/check,legacy-=",
            )
            .unwrap(),
            ..CheckbackConfig::default()
        };
        assert_eq!(config.url_for("orders-us-1"), Some("http://orders/check"));
        assert_eq!(config.url_for("orders-eu-1"), Some("http://eu/check"));
        assert_eq!(
            config.url_for("legacy-1"),
            None,
            "an empty url turns it off"
        );
        assert_eq!(config.url_for("billing"), Some("http://default/check"));
        assert_eq!(CheckbackConfig::default().url_for("orders-1"), None);
        for bad in [
            "orders-",
            "=http://x/",
            "a=ftp://x/",
            "a=http://x/,a=http://y/",
        ] {
            assert!(CheckbackConfig::parse_prefixes(bad).is_err(), "{bad}");
        }
        assert!(CheckbackConfig::parse_url("https://x/").is_err());
        assert_eq!(CheckbackConfig::parse_url(" ").unwrap(), None);
    }
}
