//! Redriving dead letters (KIP-1191's records in a share group's
//! dead-letter topic) back to a topic, as `weir dlq redrive` does and with
//! its semantics (`weir_client::dead_letter`, shared with the CLI), so the
//! two can be used in turn on one dead-letter topic:
//!
//! | route | body | answer |
//! |-------|------|--------|
//! | `POST /v1/dead-letter-topics/{topic}/redrive` | `{"to", "where"?: {key: value}, "dry_run"?, "group"?, "limit"?}` | `{"from", "to", "group", "dry_run", "redriven", "passed_over", "not_dead_letters", "gone": [...], "more", "progress": {partition: offset}, "records"?: [...]}` |
//!
//! A call reads the dead-letter topic from where the last redrive stopped
//! (the committed offsets of the progress group, `weir-dlq-redrive.<topic>`
//! unless `group` names one; the log start where it has none) towards the
//! last stable offset it found at the start. Each dead letter whose
//! `__dlq.errors.KEY` headers match every `where` (KEY one of topic,
//! partition, offset, group, delivery.count, message) is produced to `to`
//! (acks=all) with the dead letter's copy of the key, value and headers
//! (`errors.deadletterqueue.copy.record.enable`), or else the original read
//! back from its topic, partition and offset (one no longer there is listed
//! in `gone`), and the header `weir.redriven-from: TOPIC/PARTITION/OFFSET`.
//! It keeps its partition when `to` is its topic; elsewhere a keyed record
//! goes where librdkafka's default partitioner puts it, an unkeyed one to
//! any partition. Only once every record is acknowledged are the progress
//! group's offsets moved to where the call stopped (`progress`), so a
//! failed call can be made again and a finished one is not repeated; dead
//! letters a `where` left out are passed over for good. `dry_run` lists what
//! would be moved (`records`: dead letter, source, message) and produces
//! and commits nothing. To read a topic again, reset the progress group's
//! offsets (`POST /v1/groups/weir-dlq-redrive.<topic>/offsets/reset`).
//!
//! One call does a bounded part of the work, to answer well within the
//! API's 10 s: it reads at most `limit` records (default
//! [`RECORDS_PER_CALL_DEFAULT`], at most [`RECORDS_PER_CALL_MAX`]), at most
//! [`READ_BYTES_MAX`] of record batches and originals, and stops reading after
//! [`READ_TIME_MAX`]; `more: true` says records are left, and the next
//! call goes on from there (a dry run, which moves nothing, shows the same
//! first part again). The records are read and produced through this
//! broker: on a cluster, the node that leads the partitions (421 names the
//! misdirection otherwise). 404 for an unknown topic, 400 for an unknown
//! `where` key or a bad limit; a refused produce or commit answers its
//! Kafka error, and nothing is committed.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::routing::post;
use axum::{Json, Router};
use bytes::{BufMut as _, Bytes, BytesMut};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{BrokerId, FetchRequest, ProduceRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use serde::{Deserialize, Serialize};
use weir_client::dead_letter::{self, Content, REDRIVEN_FROM, Source};
use weir_storage::RecordBatchHeader;

use crate::group_offsets::{
    EARLIEST_TIMESTAMP, LATEST_TIMESTAMP, READ_COMMITTED, commit, committed, list_offsets,
    partition_leaders,
};
use crate::kafka::{ask, expect_response, internal};
use crate::topic_admin::{check, logged};
use crate::{AdminError, AdminState};

/// Records one call reads when the body names no `limit`.
pub(crate) const RECORDS_PER_CALL_DEFAULT: usize = 500;
/// The most records one call may read.
pub(crate) const RECORDS_PER_CALL_MAX: usize = 10_000;
/// The most bytes of record batches one call reads from the dead-letter
/// topic; past it the call stops (after the batch it is in).
pub(crate) const READ_BYTES_MAX: usize = 16 * 1024 * 1024;
/// How long one call reads before it stops and produces what it has.
pub(crate) const READ_TIME_MAX: Duration = Duration::from_secs(4);
/// Bytes one Fetch asks of a partition.
const FETCH_PARTITION_BYTES: i32 = 1024 * 1024;
/// The most bytes a batch's records may decompress to.
const DECOMPRESSED_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Records of one produced batch, in bytes; past it another batch starts.
const PRODUCE_BATCH_BYTES: usize = 512 * 1024;
/// How long the broker may wait for the replicas of a produce.
const PRODUCE_TIMEOUT_MS: i32 = 4_000;
/// The versions sent: the newest that name topics (later ones use ids).
const FETCH_VERSION: i16 = 12;
const PRODUCE_VERSION: i16 = 9;

/// The routes of this module.
pub(crate) fn routes() -> Router<AdminState> {
    Router::new().route(
        "/v1/dead-letter-topics/{topic}/redrive",
        post(redrive_route),
    )
}

/// A `where` value: text, or a number for the numeric headers.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(crate) enum FilterValue {
    /// `"Offset rejected by client."`.
    Text(String),
    /// `3`.
    Number(serde_json::Number),
}

impl FilterValue {
    fn text(&self) -> String {
        match self {
            Self::Text(text) => text.clone(),
            Self::Number(n) => n.to_string(),
        }
    }
}

/// `POST /v1/dead-letter-topics/{topic}/redrive`'s body.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Redrive {
    /// Where the records go.
    pub to: String,
    /// Only the dead letters whose `__dlq.errors.KEY` header is the value.
    #[serde(rename = "where", default)]
    pub filters: BTreeMap<String, FilterValue>,
    /// List what would be moved; produce and commit nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// The progress group; `weir-dlq-redrive.<topic>` when absent.
    pub group: Option<String>,
    /// The most records this call reads.
    pub limit: Option<usize>,
}

/// A dead letter a dry run would redrive.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct WouldRedrive {
    /// `TOPIC/PARTITION/OFFSET` of the dead letter.
    pub dead_letter: String,
    /// `TOPIC/PARTITION/OFFSET` of its original.
    pub source: String,
    /// Why it was given up on (`__dlq.errors.message`).
    pub message: Option<String>,
}

/// What a redrive call did.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Redriven {
    /// The dead-letter topic.
    pub from: String,
    /// Where the records went.
    pub to: String,
    /// The progress group.
    pub group: String,
    /// Only listed.
    pub dry_run: bool,
    /// Dead letters produced to `to` (on a dry run, that would be).
    pub redriven: u64,
    /// Dead letters a `where` left out.
    pub passed_over: u64,
    /// Records without the dead-letter headers.
    pub not_dead_letters: u64,
    /// Dead letters without a copy whose original is gone from its topic.
    pub gone: Vec<String>,
    /// Records are left for another call.
    pub more: bool,
    /// Per partition of the dead-letter topic, where this call stopped:
    /// the offsets committed for the progress group (not on a dry run).
    pub progress: BTreeMap<i32, i64>,
    /// On a dry run, what would be redriven.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub records: Option<Vec<WouldRedrive>>,
}

async fn redrive_route(
    State(state): State<AdminState>,
    topic: Result<Path<String>, PathRejection>,
    body: Result<Json<Redrive>, JsonRejection>,
) -> Result<Json<Redriven>, AdminError> {
    let (Path(topic), Json(input)) = (topic?, body?);
    Ok(Json(redrive(&state, &topic, input).await?))
}

/// Redrive a bounded part of `topic`'s dead letters to `input.to`, as `weir
/// dlq redrive` does.
pub(crate) async fn redrive(
    state: &AdminState,
    topic: &str,
    input: Redrive,
) -> Result<Redriven, AdminError> {
    let target = format!("{topic} to {}", input.to);
    match run(state, topic, input).await {
        Ok(done) if done.dry_run => {
            tracing::info!(
                operation = "redrive dead letters",
                target,
                outcome = "dry run",
                would_redrive = done.redriven,
                "admin API write"
            );
            Ok(done)
        }
        outcome => {
            if let Ok(done) = &outcome {
                tracing::info!(
                    from = done.from,
                    to = done.to,
                    group = done.group,
                    redriven = done.redriven,
                    passed_over = done.passed_over,
                    gone = done.gone.len(),
                    more = done.more,
                    "dead letters redriven through the admin API"
                );
            }
            logged("redrive dead letters", &target, outcome)
        }
    }
}

/// A record read from a partition, duplicate header keys kept.
#[derive(Debug)]
struct ReadRecord {
    offset: i64,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(String, Option<Vec<u8>>)>,
}

impl ReadRecord {
    fn header_refs(&self) -> impl Iterator<Item = (&str, Option<&[u8]>)> {
        self.headers.iter().map(|(k, v)| (k.as_str(), v.as_deref()))
    }
}

/// What one Fetch of one partition gave.
struct Fetched {
    /// The committed records, in order.
    records: Vec<ReadRecord>,
    /// The offset after the last batch read (control batches and aborted
    /// records included); `None` when no batch came.
    next: Option<i64>,
    /// Bytes of batches read.
    bytes: usize,
}

async fn run(state: &AdminState, topic: &str, input: Redrive) -> Result<Redriven, AdminError> {
    let started = tokio::time::Instant::now();
    dead_letter::check_filter_keys(input.filters.keys().map(String::as_str))
        .map_err(|why| AdminError::bad_request(format!("where {why}")))?;
    let filters: Vec<(String, String)> = input
        .filters
        .iter()
        .map(|(k, v)| (k.clone(), v.text()))
        .collect();
    let limit = input.limit.unwrap_or(RECORDS_PER_CALL_DEFAULT);
    if !(1..=RECORDS_PER_CALL_MAX).contains(&limit) {
        return Err(AdminError::bad_request(format!(
            "limit is {limit}, from 1 to {RECORDS_PER_CALL_MAX}"
        )));
    }
    if input.to.is_empty() {
        return Err(AdminError::bad_request("to names no topic"));
    }
    let partitions: Vec<i32> = partition_leaders(state, topic).await?.into_keys().collect();
    let to_partitions = partition_leaders(state, &input.to).await?.len();
    let group = dead_letter::progress_group(topic, input.group.as_deref());
    let done = committed(state, &group, topic, &partitions).await?;
    let lows = list_offsets(
        state,
        topic,
        &partitions,
        EARLIEST_TIMESTAMP,
        READ_COMMITTED,
    )
    .await?;
    let highs = list_offsets(state, topic, &partitions, LATEST_TIMESTAMP, READ_COMMITTED).await?;
    // Where each partition's read starts and ends.
    let mut positions: BTreeMap<i32, (i64, i64)> = BTreeMap::new();
    for p in &partitions {
        let low = lows.get(p).copied().flatten().unwrap_or(0);
        let Some(high) = highs.get(p).copied().flatten() else {
            continue;
        };
        let start = done.get(p).copied().unwrap_or(low).max(low);
        if start < high {
            positions.insert(*p, (start, high));
        }
    }

    let mut answer = Redriven {
        from: topic.to_owned(),
        to: input.to.clone(),
        group: group.clone(),
        dry_run: input.dry_run,
        redriven: 0,
        passed_over: 0,
        not_dead_letters: 0,
        gone: Vec::new(),
        more: false,
        progress: BTreeMap::new(),
        records: input.dry_run.then(Vec::new),
    };
    let mut outgoing: BTreeMap<i32, Vec<Content>> = BTreeMap::new();
    let mut unkeyed_next = usize::try_from(state.broker.clock().now_ms()).unwrap_or(0);
    let (mut read, mut read_bytes) = (0usize, 0usize);
    let mut stopped = false;
    for (p, (position, end)) in positions.iter_mut() {
        while *position < *end && !stopped {
            if read >= limit || read_bytes >= READ_BYTES_MAX || started.elapsed() >= READ_TIME_MAX {
                stopped = true;
                break;
            }
            let before = *position;
            let fetched = fetch(state, topic, *p, *position).await?;
            read_bytes += fetched.bytes;
            let Some(next) = fetched.next else {
                // Nothing came below the end found at the start: left for
                // another call.
                stopped = true;
                break;
            };
            let mut cut = false;
            for record in &fetched.records {
                if record.offset < *position {
                    continue;
                }
                if record.offset >= *end {
                    break;
                }
                if read >= limit
                    || read_bytes >= READ_BYTES_MAX
                    || started.elapsed() >= READ_TIME_MAX
                {
                    cut = true;
                    break;
                }
                read += 1;
                *position = record.offset + 1;
                let from = dead_letter::redriven_from(topic, *p, record.offset);
                let headers = dead_letter::dead_letter_headers(record.header_refs());
                let Some(source) = Source::of(&headers) else {
                    answer.not_dead_letters += 1;
                    continue;
                };
                let wanted = filters.iter().map(|(k, v)| (k.as_str(), v.as_str()));
                if !dead_letter::matches(&headers, wanted) {
                    answer.passed_over += 1;
                    continue;
                }
                let copy = dead_letter::copied(
                    record.key.as_deref(),
                    record.value.as_deref(),
                    dead_letter::own_headers(record.header_refs()),
                );
                let content = match copy {
                    Some(copy) => copy,
                    None => match original(state, &source).await? {
                        Some(original) => original,
                        None => {
                            answer.gone.push(from);
                            continue;
                        }
                    },
                };
                read_bytes += content_bytes(&content);
                answer.redriven += 1;
                if let Some(listed) = &mut answer.records {
                    listed.push(WouldRedrive {
                        dead_letter: from,
                        source: source.to_string(),
                        message: headers.get("message").cloned(),
                    });
                    continue;
                }
                let partition = match source.keeps_partition(&input.to, to_partitions) {
                    Some(partition) => partition,
                    None => {
                        match dead_letter::partition_for_key(content.key.as_deref(), to_partitions)
                        {
                            Some(partition) => partition,
                            None => {
                                unkeyed_next = unkeyed_next.wrapping_add(1);
                                i32::try_from(unkeyed_next % to_partitions.max(1)).unwrap_or(0)
                            }
                        }
                    }
                };
                let mut content = content;
                content
                    .headers
                    .push((REDRIVEN_FROM.to_owned(), Some(from.into_bytes())));
                outgoing.entry(partition).or_default().push(content);
            }
            if cut {
                stopped = true;
                break;
            }
            // Past the batches read: control batches, aborted records and
            // compacted gaps hold no record to redrive.
            *position = (*position).max(next.min(*end));
            if *position == before {
                // Only batches below the position came: left for another call.
                stopped = true;
                break;
            }
        }
    }
    for (p, (position, end)) in &positions {
        answer.progress.insert(*p, *position);
        if position < end {
            answer.more = true;
        }
    }
    if !input.dry_run {
        let now_ms = state.broker.clock().now_ms();
        for (partition, records) in &outgoing {
            produce(state, &input.to, *partition, records, now_ms).await?;
        }
        let moved: Vec<(i32, i64)> = positions
            .iter()
            .filter(|(p, (position, _))| done.get(p) != Some(position))
            .map(|(p, (position, _))| (*p, *position))
            .collect();
        if !moved.is_empty() {
            commit(state, &group, topic, &moved).await?;
        }
    }
    Ok(answer)
}

/// Bytes of a record's key, value and headers.
fn content_bytes(content: &Content) -> usize {
    let headers: usize = content
        .headers
        .iter()
        .map(|(k, v)| k.len() + v.as_ref().map_or(0, Vec::len))
        .sum();
    content.key.as_ref().map_or(0, Vec::len) + content.value.as_ref().map_or(0, Vec::len) + headers
}

/// The record at `source`, `None` when its topic no longer holds it.
async fn original(state: &AdminState, source: &Source) -> Result<Option<Content>, AdminError> {
    let fetched = match fetch(state, &source.topic, source.partition, source.offset).await {
        Ok(fetched) => fetched,
        Err(err) if err.kafka_error() == Some("OFFSET_OUT_OF_RANGE") => return Ok(None),
        Err(err) => return Err(err),
    };
    // The first record at or past the offset: a later one means compaction
    // (or retention) removed it.
    Ok(fetched
        .records
        .into_iter()
        .find(|r| r.offset >= source.offset)
        .filter(|r| r.offset == source.offset)
        .map(|r| Content {
            headers: dead_letter::own_headers(r.header_refs()),
            key: r.key,
            value: r.value,
        }))
}

/// One Fetch (read_committed, no wait) of `partition` of `topic` from
/// `offset`.
async fn fetch(
    state: &AdminState,
    topic: &str,
    partition: i32,
    offset: i64,
) -> Result<Fetched, AdminError> {
    let request = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(0)
        .with_min_bytes(1)
        .with_max_bytes(FETCH_PARTITION_BYTES)
        .with_isolation_level(READ_COMMITTED)
        .with_session_id(0)
        .with_session_epoch(-1)
        .with_topics(vec![
            FetchTopic::default()
                .with_topic(TopicName(StrBytes::from_string(topic.to_owned())))
                .with_partitions(vec![
                    FetchPartition::default()
                        .with_partition(partition)
                        .with_current_leader_epoch(-1)
                        .with_fetch_offset(offset)
                        .with_last_fetched_epoch(-1)
                        .with_log_start_offset(-1)
                        .with_partition_max_bytes(FETCH_PARTITION_BYTES),
                ]),
        ]);
    let response = ask(&state.broker, request, FETCH_VERSION).await?;
    let response = expect_response!(response, Fetch)?;
    let what = format!("cannot read {topic}/{partition} at {offset}");
    check(response.error_code, None, &what)?;
    let data = response
        .responses
        .into_iter()
        .flat_map(|t| t.partitions)
        .find(|p| p.partition_index == partition)
        .ok_or_else(|| internal(format!("Fetch answered nothing for {topic}/{partition}")))?;
    check(data.error_code, None, &what)?;
    let aborted: Vec<(i64, i64)> = data
        .aborted_transactions
        .unwrap_or_default()
        .iter()
        .map(|a| (a.producer_id.0, a.first_offset))
        .collect();
    let bytes = data.records.unwrap_or_default();
    parse_records(&bytes, &aborted).map_err(|why| internal(format!("{what}: {why}")))
}

/// The committed records of a Fetch's record batches, leaving out control
/// batches and the records of `aborted` transactions (producer id, first
/// offset), as a read_committed consumer does. A batch cut short at the end
/// (a fetch may end inside one) ends the read.
fn parse_records(bytes: &Bytes, aborted: &[(i64, i64)]) -> Result<Fetched, String> {
    let mut fetched = Fetched {
        records: Vec::new(),
        next: None,
        bytes: 0,
    };
    let mut aborted: Vec<(i64, i64)> = aborted.to_vec();
    aborted.sort_by_key(|(_, first)| *first);
    let mut aborted = aborted.into_iter().peekable();
    let mut aborting: HashSet<i64> = HashSet::new();
    for framed in weir_storage::batches(bytes) {
        let (header, batch) = match framed {
            Ok(framed) => framed,
            Err(_) if fetched.next.is_some() => break,
            Err(e) => return Err(e.to_string()),
        };
        fetched.bytes += batch.len();
        fetched.next = Some(header.base_offset + i64::from(header.last_offset_delta) + 1);
        while let Some((producer, _)) = aborted.next_if(|(_, first)| *first <= header.base_offset) {
            aborting.insert(producer);
        }
        if header.attributes & RecordBatchHeader::CONTROL != 0 {
            // The end of a transaction: its producer's later batches are
            // another transaction's.
            aborting.remove(&header.producer_id);
            continue;
        }
        if header.attributes & RecordBatchHeader::TRANSACTIONAL != 0
            && aborting.contains(&header.producer_id)
        {
            continue;
        }
        let section = batch
            .get(RecordBatchHeader::BYTES..)
            .ok_or("a batch shorter than its header")?;
        let codec = header.attributes & RecordBatchHeader::COMPRESSION_MASK;
        let section = weir_storage::decompress_records(codec, section, DECOMPRESSED_BYTES_MAX)
            .map_err(|e| e.to_string())?;
        for frame in weir_storage::record_frames(&section, header.record_count) {
            let frame = frame.map_err(|e| e.to_string())?;
            let slice = |range: std::ops::Range<usize>| {
                section
                    .get(range)
                    .map(<[u8]>::to_vec)
                    .ok_or("a record past its batch")
            };
            let mut headers = Vec::new();
            for h in weir_storage::record_headers(&section, &frame) {
                let h = h.map_err(|e| e.to_string())?;
                let key = String::from_utf8_lossy(&slice(h.key)?).into_owned();
                let value = h.value.map(slice).transpose()?;
                headers.push((key, value));
            }
            fetched.records.push(ReadRecord {
                offset: header.base_offset + frame.offset_delta,
                key: frame.key.map(slice).transpose()?,
                value: frame.value.map(slice).transpose()?,
                headers,
            });
        }
    }
    Ok(fetched)
}

/// Produce `records` to `partition` of `topic` (acks=all), in batches of
/// about [`PRODUCE_BATCH_BYTES`], stamped `now_ms`.
async fn produce(
    state: &AdminState,
    topic: &str,
    partition: i32,
    records: &[Content],
    now_ms: i64,
) -> Result<(), AdminError> {
    let mut batch: Vec<Vec<u8>> = Vec::new();
    let mut batch_bytes = 0usize;
    for (i, record) in records.iter().enumerate() {
        let encoded = encode_record(i32::try_from(batch.len()).unwrap_or(i32::MAX), record);
        batch_bytes += encoded.len();
        batch.push(encoded);
        if batch_bytes >= PRODUCE_BATCH_BYTES || i + 1 == records.len() {
            send_batch(state, topic, partition, &batch, now_ms).await?;
            batch.clear();
            batch_bytes = 0;
        }
    }
    Ok(())
}

async fn send_batch(
    state: &AdminState,
    topic: &str,
    partition: i32,
    records: &[Vec<u8>],
    now_ms: i64,
) -> Result<(), AdminError> {
    let request = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(PRODUCE_TIMEOUT_MS)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_owned())))
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(partition)
                        .with_records(Some(encode_batch(records, now_ms))),
                ]),
        ]);
    let response = ask(&state.broker, request, PRODUCE_VERSION).await?;
    let response = expect_response!(response, Produce)?;
    for found in &response.responses {
        for p in &found.partition_responses {
            check(
                p.error_code,
                p.error_message.as_ref(),
                &format!(
                    "cannot produce to {topic}/{}; nothing was committed, call again",
                    p.index
                ),
            )?;
        }
    }
    Ok(())
}

/// A record of a v2 batch: its length, attributes (0), timestamp delta
/// (0), `offset_delta`, key, value and headers, duplicate keys kept (which
/// `kafka-protocol`'s encoder would collapse).
fn encode_record(offset_delta: i32, record: &Content) -> Vec<u8> {
    let mut body = Vec::new();
    body.push(0u8);
    put_varint(&mut body, 0);
    put_varint(&mut body, i64::from(offset_delta));
    put_bytes(&mut body, record.key.as_deref());
    put_bytes(&mut body, record.value.as_deref());
    put_varint(&mut body, i64::try_from(record.headers.len()).unwrap_or(0));
    for (key, value) in &record.headers {
        put_bytes(&mut body, Some(key.as_bytes()));
        put_bytes(&mut body, value.as_deref());
    }
    let mut framed = Vec::with_capacity(body.len() + 5);
    put_varint(&mut framed, i64::try_from(body.len()).unwrap_or(0));
    framed.extend_from_slice(&body);
    framed
}

/// A v2 record batch of `records` (from [`encode_record`]), uncompressed,
/// not idempotent, every record stamped `now_ms` (CreateTime).
fn encode_batch(records: &[Vec<u8>], now_ms: i64) -> Bytes {
    let records_bytes: usize = records.iter().map(Vec::len).sum();
    let total = RecordBatchHeader::BYTES + records_bytes;
    let mut out = BytesMut::with_capacity(total);
    out.put_i64(0);
    let after_length = total - RecordBatchHeader::LOG_OVERHEAD_BYTES;
    out.put_i32(i32::try_from(after_length).unwrap_or(i32::MAX));
    out.put_i32(-1);
    out.put_i8(2);
    out.put_u32(0);
    out.put_i16(0);
    let count = i32::try_from(records.len()).unwrap_or(i32::MAX);
    out.put_i32(count - 1);
    out.put_i64(now_ms);
    out.put_i64(now_ms);
    out.put_i64(-1);
    out.put_i16(-1);
    out.put_i32(-1);
    out.put_i32(count);
    for record in records {
        out.put_slice(record);
    }
    let crc = crc32c::crc32c(
        out.get(RecordBatchHeader::ATTRIBUTES_AT..)
            .unwrap_or_default(),
    );
    if let Some(at) = out.get_mut(RecordBatchHeader::CRC_AT..RecordBatchHeader::CRC_AT + 4) {
        at.copy_from_slice(&crc.to_be_bytes());
    }
    out.freeze()
}

/// Kafka's zigzag varint.
fn put_varint(out: &mut Vec<u8>, value: i64) {
    let mut v = ((value << 1) ^ (value >> 63)) as u64;
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A varint length and the bytes, -1 for null.
fn put_bytes(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        None => put_varint(out, -1),
        Some(b) => {
            put_varint(out, i64::try_from(b.len()).unwrap_or(0));
            out.extend_from_slice(b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_produced_batch_reads_back_with_duplicate_headers_and_a_valid_crc() {
        let record = Content {
            key: Some(b"k".to_vec()),
            value: None,
            headers: vec![
                ("a".to_owned(), Some(b"1".to_vec())),
                ("a".to_owned(), None),
                (REDRIVEN_FROM.to_owned(), Some(b"dlq/0/7".to_vec())),
            ],
        };
        let records = vec![encode_record(0, &record), encode_record(1, &record)];
        let batch = encode_batch(&records, 1_700_000_000_000);
        let header = RecordBatchHeader::parse(&batch).expect("a header");
        assert_eq!(header.record_count, 2);
        assert_eq!(
            header.crc,
            crc32c::crc32c(&batch[RecordBatchHeader::ATTRIBUTES_AT..])
        );
        let fetched = parse_records(&batch, &[]).expect("parses");
        assert_eq!(fetched.next, Some(2));
        assert_eq!(fetched.records.len(), 2);
        let back = &fetched.records[1];
        assert_eq!(back.offset, 1);
        assert_eq!(back.key.as_deref(), Some(&b"k"[..]));
        assert_eq!(back.value, None);
        assert_eq!(back.headers, record.headers);
    }

    #[test]
    fn aborted_transactions_and_control_batches_are_not_read() {
        let record = Content {
            key: None,
            value: Some(b"v".to_vec()),
            headers: Vec::new(),
        };
        let mut batch = encode_batch(&[encode_record(0, &record)], 0).to_vec();
        // Transactional, producer 9.
        batch[RecordBatchHeader::ATTRIBUTES_AT..][..2]
            .copy_from_slice(&RecordBatchHeader::TRANSACTIONAL.to_be_bytes());
        batch[RecordBatchHeader::PRODUCER_ID_AT..][..8].copy_from_slice(&9i64.to_be_bytes());
        let fetched = parse_records(&Bytes::from(batch.clone()), &[(9, 0)]).expect("parses");
        assert!(fetched.records.is_empty());
        assert_eq!(fetched.next, Some(1), "the position still moves past it");
        let fetched = parse_records(&Bytes::from(batch), &[]).expect("parses");
        assert_eq!(fetched.records.len(), 1, "a committed transaction's record");
    }

    #[test]
    fn varints_are_zigzag() {
        let enc = |v| {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            out
        };
        assert_eq!(enc(0), [0]);
        assert_eq!(enc(-1), [1]);
        assert_eq!(enc(1), [2]);
        assert_eq!(enc(64), [0x80, 0x01]);
    }
}
