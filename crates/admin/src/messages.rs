//! A topic's records, read from this node's replicas (what `weir consume`
//! shows, without a consumer group):
//!
//! | route | answer |
//! |-------|--------|
//! | `GET /v1/topics/{topic}/messages?partition=&offset=&timestamp=&key=&limit=&format=&bytes=&isolation=` | [`MessagePage`]: records with partition, offset, timestamp, key, value and headers, and per partition read where the read started and where to go on |
//!
//! **Where the read starts**, in each partition read (`partition`, or
//! every partition of the topic in turn when none is given):
//!
//! - `offset=O`: at O (a record before the log start is gone: the read
//!   starts at the log start, and says so);
//! - `timestamp=MS`: at the first record whose timestamp is at or after MS
//!   (ListOffsets' semantics); at the end when none is;
//! - neither: at the log start.
//!
//! `key=K` keeps only the records whose key is K's UTF-8 bytes, scanning
//! from that start: a search, bounded like every read below.
//!
//! **Bounds.** At most `limit` records are shown (default
//! [`LIMIT_DEFAULT`], at most [`LIMIT_MAX`]). Each key, value, header key
//! and header value is cut to `bytes` (default [`SHOWN_BYTES_DEFAULT`], at
//! most [`SHOWN_BYTES_MAX`]), with `cut: true` and its full `size`. No
//! record is added once the shown bytes reach [`ANSWER_BYTES_MAX`]; no
//! more is read once [`SCAN_BYTES_MAX`] of stored batches were read or
//! [`SCAN_RECORDS_MAX`] records walked. A read stopped by one of these
//! (not by `limit` or the end) answers `cut: true`; each partition's
//! `next_offset` says where to go on. A batch whose records decompress to
//! more than [`DECOMPRESSED_BATCH_BYTES_MAX`] is passed over and named in
//! `problems`. At most [`READERS_MAX`] reads run at once; more wait
//! (within the API's time limit).
//!
//! **What is shown**: what a consumer would be given. With
//! `isolation=read_committed` (the default) the read stops at the last
//! stable offset and aborted transactions' records are left out; with
//! `isolation=read_uncommitted` it goes to the high watermark and shows
//! them. Transaction markers are never shown; pending delayed records
//! neither (the storage holds them back from every reader). A view shows
//! its source's records that its tag filter matches.
//!
//! **Formats** (`format`): `utf8` (the default; bytes that are not UTF-8
//! are replaced with U+FFFD), `json` (the JSON value when the shown bytes
//! parse as JSON, else the text as `utf8`), `hex` (lower-case hex digits).
//!
//! 400 for a query value that does not parse or is past a bound, or both
//! `offset` and `timestamp`; 404 for an unknown topic or partition; 421
//! for a partition this node holds no replica of (the message names the
//! leader). A partition led by another broker is read from this
//! follower's copy, up to its high watermark, and says so.

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use weir_storage::{Partition, PartitionId, RecordBatchHeader, TagExpr};

use crate::{AdminError, AdminState};

/// Records shown when `limit` is not given.
pub(crate) const LIMIT_DEFAULT: usize = 50;
/// The most records one answer shows.
pub(crate) const LIMIT_MAX: usize = 1_000;
/// Bytes of each key, value and header shown when `bytes` is not given.
pub(crate) const SHOWN_BYTES_DEFAULT: usize = 1_024;
/// The most bytes of each a client may ask for.
pub(crate) const SHOWN_BYTES_MAX: usize = 64 * 1024;
/// No record is added once the bytes shown reach this.
pub(crate) const ANSWER_BYTES_MAX: usize = 4 << 20;
/// The most bytes of stored batches one answer reads.
pub(crate) const SCAN_BYTES_MAX: u64 = 64 << 20;
/// The most records one answer walks (a key search walks every record).
pub(crate) const SCAN_RECORDS_MAX: u64 = 1_000_000;
/// Bytes of batches asked of the log per read.
const READ_BYTES: usize = 1 << 20;
/// The most a batch's records may decompress to; a larger one is skipped
/// and reported.
const DECOMPRESSED_BATCH_BYTES_MAX: usize = 32 << 20;
/// Reads running at once, over every connection; more wait. With the
/// bounds above, their memory stays near `READERS_MAX` times (one batch
/// decompressed, one read, one answer).
const READERS_MAX: usize = 4;
static READERS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(READERS_MAX);
/// The most read problems reported in one answer.
const PROBLEMS_MAX: usize = 16;
/// The topic config holding a view's tag expression.
const VIEW_TAGS: &str = "weir.view.tags";

/// The routes of this module.
pub(crate) fn routes() -> Router<AdminState> {
    Router::new().route("/v1/topics/{topic}/messages", get(messages))
}

/// How key, value and header bytes are rendered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Format {
    /// Text; bytes that are not UTF-8 become U+FFFD.
    #[default]
    Utf8,
    /// The JSON value when the bytes parse as JSON, else the text.
    Json,
    /// Lower-case hex digits.
    Hex,
}

/// Which records are shown, in Kafka's `isolation.level` words.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Isolation {
    /// Up to the last stable offset, aborted transactions left out.
    #[default]
    ReadCommitted,
    /// Up to the high watermark, everything.
    ReadUncommitted,
}

/// Where a read starts in each partition.
// `LogStart` is Kafka's word (the log-start offset), not a repeat of the
// enum's name.
#[allow(clippy::enum_variant_names)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum Start {
    /// At the log start.
    #[default]
    LogStart,
    /// At this offset (the log start when it is before it).
    Offset(i64),
    /// At the first record with a timestamp at or after this (ms).
    Timestamp(i64),
}

/// What to read: [`read_messages`]'s question, checked against the
/// bounds by [`MessageQuery::checked`].
#[derive(Debug, Clone, Default)]
pub(crate) struct MessageQuery {
    /// The partition; `None` reads each partition in turn.
    pub partition: Option<i32>,
    /// Where to start.
    pub start: Start,
    /// Only records with this key.
    pub key: Option<Vec<u8>>,
    /// The most records shown (at most [`LIMIT_MAX`]).
    pub limit: usize,
    /// How bytes are rendered.
    pub format: Format,
    /// Bytes shown of each key, value and header (at most
    /// [`SHOWN_BYTES_MAX`]).
    pub bytes: usize,
    /// Which records are shown.
    pub isolation: Isolation,
}

/// The query string of `GET /v1/topics/{topic}/messages`.
#[derive(Debug, Deserialize)]
pub(crate) struct MessagesParams {
    partition: Option<i32>,
    offset: Option<i64>,
    timestamp: Option<i64>,
    key: Option<String>,
    limit: Option<usize>,
    #[serde(default)]
    format: Format,
    bytes: Option<usize>,
    #[serde(default)]
    isolation: Isolation,
}

impl MessageQuery {
    /// The query a request's parameters ask, or 400 saying what is wrong.
    pub(crate) fn checked(params: MessagesParams) -> Result<Self, AdminError> {
        let start = match (params.offset, params.timestamp) {
            (Some(_), Some(_)) => {
                return Err(AdminError::bad_request(
                    "give offset or timestamp, not both",
                ));
            }
            (Some(offset), None) if offset < 0 => {
                return Err(AdminError::bad_request(format!(
                    "offset is {offset}, at least 0"
                )));
            }
            (Some(offset), None) => Start::Offset(offset),
            (None, Some(ms)) if ms < 0 => {
                return Err(AdminError::bad_request(format!(
                    "timestamp is {ms}, at least 0 (ms since the Unix epoch)"
                )));
            }
            (None, Some(ms)) => Start::Timestamp(ms),
            (None, None) => Start::LogStart,
        };
        let limit = params.limit.unwrap_or(LIMIT_DEFAULT);
        if limit > LIMIT_MAX {
            return Err(AdminError::bad_request(format!(
                "limit is {limit}, at most {LIMIT_MAX}"
            )));
        }
        let bytes = params.bytes.unwrap_or(SHOWN_BYTES_DEFAULT);
        if bytes > SHOWN_BYTES_MAX {
            return Err(AdminError::bad_request(format!(
                "bytes is {bytes}, at most {SHOWN_BYTES_MAX}"
            )));
        }
        Ok(Self {
            partition: params.partition,
            start,
            key: params.key.map(String::into_bytes),
            limit,
            format: params.format,
            bytes,
            isolation: params.isolation,
        })
    }
}

/// The answer: the records read and where each partition's read stopped.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct MessagePage {
    /// The topic.
    pub topic: String,
    /// How bytes are rendered.
    pub format: Format,
    /// Which records are shown.
    pub isolation: Isolation,
    /// Each partition read (or passed over), in order.
    pub partitions: Vec<PartitionRead>,
    /// The records shown, in partition then offset order.
    pub records: Vec<Message>,
    /// Records walked (a key search walks more than it shows).
    pub scanned_records: u64,
    /// Bytes of stored batches read.
    pub scanned_bytes: u64,
    /// The read stopped at a bound on what is read or shown, before `limit`
    /// and before the end: go on from each partition's `next_offset`.
    pub cut: bool,
    /// Batches that could not be read, and were passed over.
    pub problems: Vec<String>,
}

/// One partition's read.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct PartitionRead {
    /// The partition.
    pub partition: i32,
    /// Its leader's broker id (-1: none).
    pub leader: i32,
    /// This node leads it.
    pub led_here: bool,
    /// This node holds a replica of it (else nothing was read).
    pub held_here: bool,
    /// Kafka's log-start offset, as held here.
    pub log_start_offset: Option<i64>,
    /// The high watermark, as held here.
    pub high_watermark: Option<i64>,
    /// The last stable offset, as held here.
    pub last_stable_offset: Option<i64>,
    /// Where the read started.
    pub start_offset: Option<i64>,
    /// Where to go on: after the last record walked.
    pub next_offset: Option<i64>,
    /// Where a read stops (the last stable offset or high watermark):
    /// `next_offset` reaching it means nothing more is there now.
    pub end_offset: Option<i64>,
    /// Something to know about this read (led elsewhere, started at the
    /// log start, ...).
    pub note: Option<String>,
}

/// One record.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Message {
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// Its timestamp, in ms since the Unix epoch.
    pub timestamp_ms: i64,
    /// `create_time` or `log_append_time`.
    pub timestamp_type: &'static str,
    /// Its key; `None` for a null key.
    pub key: Option<Shown>,
    /// Its value; `None` for a null value (a tombstone).
    pub value: Option<Shown>,
    /// Its headers, in order, duplicates kept.
    pub headers: Vec<ShownHeader>,
}

/// Bytes as shown.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Shown {
    /// The rendering: a string, or (format `json`) any JSON value.
    pub data: Value,
    /// How many bytes it has.
    pub size: usize,
    /// Only its first `bytes` are shown.
    pub cut: bool,
}

/// One header.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ShownHeader {
    /// Its key, as text.
    pub key: Shown,
    /// Its value; `None` for a null value.
    pub value: Option<Shown>,
}

/// Reads `topic` as `query` asks, from this node's replicas.
pub(crate) async fn read_messages(
    state: &AdminState,
    topic: &str,
    query: MessageQuery,
) -> Result<MessagePage, AdminError> {
    let _reading = READERS
        .acquire()
        .await
        .map_err(|e| crate::kafka::internal(format!("the readers' semaphore: {e}")))?;
    let broker = state.broker.clone();
    let topic = topic.to_owned();
    crate::kafka::blocking(move || read_blocking(&broker, &topic, &query)).await?
}

/// The topic whose replicas hold the records, and a view's filter.
struct Source {
    meta: weir_metadata::TopicMeta,
    filter: Option<TagExpr>,
}

fn source_of(broker: &weir_broker::Broker, topic: &str) -> Result<(i32, Source), AdminError> {
    let meta = broker
        .metadata()
        .topic(topic)
        .ok_or_else(|| crate::topics::unknown_topic(topic))?;
    let partitions = meta.partitions;
    let Some(source) = crate::topics::view_of(&meta) else {
        return Ok((partitions, Source { meta, filter: None }));
    };
    let tags = meta.configs.get(VIEW_TAGS).map_or("*", String::as_str);
    let filter = TagExpr::parse(tags).map_err(|e| {
        AdminError::new(
            StatusCode::CONFLICT,
            format!("view {topic} has a tag filter this broker cannot read: {e}"),
        )
    })?;
    let data = broker.metadata().topic(&source).ok_or_else(|| {
        AdminError::not_found(format!("view {topic} reads topic {source}, which is gone"))
    })?;
    Ok((
        partitions,
        Source {
            meta: data,
            filter: Some(filter),
        },
    ))
}

/// What one answer has used of its bounds.
struct Budget {
    records: Vec<Message>,
    shown_bytes: usize,
    scanned_records: u64,
    scanned_bytes: u64,
    cut: bool,
    problems: Vec<String>,
}

impl Budget {
    /// The read must stop: a bound reached.
    fn spent(&self) -> bool {
        self.shown_bytes >= ANSWER_BYTES_MAX
            || self.scanned_bytes >= SCAN_BYTES_MAX
            || self.scanned_records >= SCAN_RECORDS_MAX
    }

    fn problem(&mut self, what: String) {
        if self.problems.len() < PROBLEMS_MAX {
            self.problems.push(what);
        }
    }
}

fn read_blocking(
    broker: &weir_broker::Broker,
    topic: &str,
    query: &MessageQuery,
) -> Result<MessagePage, AdminError> {
    let (count, source) = source_of(broker, topic)?;
    let partitions: Vec<i32> = match query.partition {
        Some(p) if (0..count).contains(&p) => vec![p],
        Some(p) => {
            return Err(AdminError::not_found(format!(
                "topic {topic} has no partition {p}"
            )));
        }
        None => (0..count).collect(),
    };
    let node_id = broker.config().node_id;
    let mut budget = Budget {
        records: Vec::new(),
        shown_bytes: 0,
        scanned_records: 0,
        scanned_bytes: 0,
        cut: false,
        problems: Vec::new(),
    };
    let mut reads = Vec::with_capacity(partitions.len());
    for index in partitions {
        let leader = source
            .meta
            .assignment(index, node_id)
            .map_or(weir_metadata::NO_LEADER, |a| a.leader);
        let local = broker.log().partition(PartitionId {
            topic_id: source.meta.id,
            partition: index,
        });
        let Some(local) = local else {
            let why = format!(
                "this broker holds no replica of {topic}-{index}{}",
                match leader {
                    id if id >= 0 => format!("; broker {id} leads it"),
                    _ => "; it has no leader now".to_owned(),
                }
            );
            if query.partition.is_some() {
                return Err(AdminError::new(StatusCode::MISDIRECTED_REQUEST, why));
            }
            reads.push(PartitionRead {
                partition: index,
                leader,
                led_here: false,
                held_here: false,
                log_start_offset: None,
                high_watermark: None,
                last_stable_offset: None,
                start_offset: None,
                next_offset: None,
                end_offset: None,
                note: Some(why),
            });
            continue;
        };
        let mut read = read_partition(&local, index, query, source.filter.as_ref(), &mut budget);
        read.leader = leader;
        read.led_here = leader == node_id;
        if !read.led_here {
            let led = format!(
                "led by broker {leader}: read from this follower's copy, up to its high watermark"
            );
            read.note = Some(match read.note.take() {
                Some(note) => format!("{note}; {led}"),
                None => led,
            });
        }
        reads.push(read);
        if budget.records.len() >= query.limit || budget.cut {
            break;
        }
    }
    Ok(MessagePage {
        topic: topic.to_owned(),
        format: query.format,
        isolation: query.isolation,
        partitions: reads,
        records: budget.records,
        scanned_records: budget.scanned_records,
        scanned_bytes: budget.scanned_bytes,
        cut: budget.cut,
        problems: budget.problems,
    })
}

/// Read one partition held here into `budget`, as far as the query and the
/// bounds allow.
fn read_partition(
    local: &Partition,
    index: i32,
    query: &MessageQuery,
    filter: Option<&TagExpr>,
    budget: &mut Budget,
) -> PartitionRead {
    let offsets = local.offsets();
    let committed = query.isolation == Isolation::ReadCommitted;
    let end = if committed {
        offsets.last_stable
    } else {
        offsets.high_watermark
    };
    let mut note = None;
    let start = match query.start {
        Start::LogStart => offsets.log_start,
        Start::Offset(o) if o < offsets.log_start => {
            note = Some(format!(
                "offset {o} is before the log start: read from {}",
                offsets.log_start
            ));
            offsets.log_start
        }
        Start::Offset(o) => o,
        Start::Timestamp(ms) => match local.offset_for_timestamp(ms) {
            Ok(Some((offset, _))) => offset.max(offsets.log_start),
            Ok(None) => end.max(offsets.log_start),
            Err(e) => {
                budget.problem(format!("partition {index}: the time look-up failed: {e}"));
                end.max(offsets.log_start)
            }
        },
    };
    let mut read = PartitionRead {
        partition: index,
        leader: weir_metadata::NO_LEADER,
        led_here: false,
        held_here: true,
        log_start_offset: Some(offsets.log_start),
        high_watermark: Some(offsets.high_watermark),
        last_stable_offset: Some(offsets.last_stable),
        start_offset: Some(start),
        next_offset: Some(start),
        end_offset: Some(end),
        note,
    };
    let mut position = start;
    while position < end && budget.records.len() < query.limit {
        if budget.spent() {
            budget.cut = true;
            break;
        }
        let outcome = match (filter, committed) {
            (Some(filter), _) => local.read_filtered(position, READ_BYTES, committed, filter),
            (None, true) => local.read_committed(position, READ_BYTES),
            (None, false) => local.read(position, READ_BYTES),
        };
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err(e) => {
                budget.problem(format!("partition {index} at offset {position}: {e}"));
                break;
            }
        };
        if outcome.records.is_empty() {
            break;
        }
        budget.scanned_bytes += outcome.records.len() as u64;
        let before = position;
        for batch in weir_storage::batches(&outcome.records) {
            let (header, bytes) = match batch {
                Ok(batch) => batch,
                Err(e) => {
                    budget.problem(format!("partition {index} near offset {position}: {e}"));
                    position = end;
                    break;
                }
            };
            let last = header.last_offset();
            if last < position {
                continue;
            }
            if header.base_offset >= end || budget.records.len() >= query.limit {
                break;
            }
            let aborted = committed
                && header.is_transactional()
                && outcome.aborted.iter().any(|a| {
                    a.producer_id == header.producer_id
                        && (a.first_offset..=a.last_offset).contains(&header.base_offset)
                });
            if header.is_control() || aborted {
                position = last + 1;
                continue;
            }
            position = walk_batch(&header, bytes, (index, position, end), query, budget);
            if budget.spent() && position <= last {
                budget.cut = true;
                break;
            }
        }
        if position == before {
            // Nothing at or after the position in what was read: a gap
            // the next read would return again.
            break;
        }
        if budget.cut {
            break;
        }
    }
    read.next_offset = Some(position);
    read
}

/// Walk the records of one data batch from `position`, adding those the
/// query keeps; answers where to go on.
fn walk_batch(
    header: &RecordBatchHeader,
    batch: &[u8],
    (index, position, end): (i32, i64, i64),
    query: &MessageQuery,
    budget: &mut Budget,
) -> i64 {
    let after = header.last_offset() + 1;
    let section = batch.get(RecordBatchHeader::BYTES..).unwrap_or_default();
    let records = match weir_storage::decompress_records(
        header.codec(),
        section,
        DECOMPRESSED_BATCH_BYTES_MAX,
    ) {
        Ok(records) => records,
        Err(e) => {
            budget.problem(format!(
                "partition {index}, batch at offset {}: {e}; passed over",
                header.base_offset
            ));
            return after;
        }
    };
    let mut next = position;
    for frame in weir_storage::record_frames(&records, header.record_count) {
        let frame = match frame {
            Ok(frame) => frame,
            Err(e) => {
                budget.problem(format!(
                    "partition {index}, batch at offset {}: {e}; passed over",
                    header.base_offset
                ));
                return after;
            }
        };
        let offset = header.base_offset + frame.offset_delta;
        if offset < position {
            continue;
        }
        if offset >= end || budget.records.len() >= query.limit || budget.spent() {
            return next;
        }
        budget.scanned_records += 1;
        next = offset + 1;
        let key = frame.key.clone().and_then(|r| records.get(r));
        if let Some(wanted) = &query.key
            && key != Some(wanted.as_slice())
        {
            continue;
        }
        let value = frame.value.clone().and_then(|r| records.get(r));
        let mut headers = Vec::new();
        for h in weir_storage::record_headers(&records, &frame) {
            let Ok(h) = h else {
                budget.problem(format!(
                    "partition {index}, offset {offset}: headers that cannot be read"
                ));
                break;
            };
            let hkey = records.get(h.key).unwrap_or_default();
            let hvalue = h.value.and_then(|r| records.get(r));
            headers.push(ShownHeader {
                key: show(hkey, Format::Utf8, query.bytes),
                value: hvalue.map(|v| show(v, query.format, query.bytes)),
            });
        }
        let (timestamp_ms, timestamp_type) = if header.is_log_append_time() {
            (header.max_timestamp, "log_append_time")
        } else {
            (header.base_timestamp + frame.timestamp_delta, "create_time")
        };
        let message = Message {
            partition: index,
            offset,
            timestamp_ms,
            timestamp_type,
            key: key.map(|k| show(k, query.format, query.bytes)),
            value: value.map(|v| show(v, query.format, query.bytes)),
            headers,
        };
        budget.shown_bytes += shown_bytes(&message);
        budget.records.push(message);
    }
    next.max(after)
}

/// Roughly the bytes a record takes in the answer.
fn shown_bytes(message: &Message) -> usize {
    let one = |s: &Option<Shown>| s.as_ref().map_or(0, |s| s.data.to_string().len());
    one(&message.key)
        + one(&message.value)
        + message
            .headers
            .iter()
            .map(|h| h.key.data.to_string().len() + one(&h.value))
            .sum::<usize>()
        + 64
}

/// `bytes` rendered in `format`, cut to `max` bytes.
pub(crate) fn show(bytes: &[u8], format: Format, max: usize) -> Shown {
    let cut = bytes.len() > max;
    let shown = bytes.get(..max).unwrap_or(bytes);
    let data = match format {
        Format::Hex => Value::String(hex(shown)),
        Format::Json if !cut => serde_json::from_slice::<Value>(shown)
            .unwrap_or_else(|_| Value::String(text(shown, false))),
        Format::Json | Format::Utf8 => Value::String(text(shown, cut)),
    };
    Shown {
        data,
        size: bytes.len(),
        cut,
    }
}

/// Lossy UTF-8; when `cut`, a character the cut split is left out rather
/// than shown as U+FFFD.
fn text(bytes: &[u8], cut: bool) -> String {
    let whole = match std::str::from_utf8(bytes) {
        Ok(text) => return text.to_owned(),
        Err(e) if cut && e.error_len().is_none() => bytes.get(..e.valid_up_to()).unwrap_or(bytes),
        Err(_) => bytes,
    };
    String::from_utf8_lossy(whole).into_owned()
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

async fn messages(
    State(state): State<AdminState>,
    topic: Result<Path<String>, PathRejection>,
    params: Result<Query<MessagesParams>, QueryRejection>,
) -> Result<Json<MessagePage>, AdminError> {
    let (Path(topic), Query(params)) = (topic?, params?);
    let query = MessageQuery::checked(params)?;
    read_messages(&state, &topic, query).await.map(Json)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::testing::{create_topic, produce};

    fn query(start: Start, limit: usize) -> MessageQuery {
        MessageQuery {
            start,
            limit,
            bytes: SHOWN_BYTES_DEFAULT,
            ..MessageQuery::default()
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn records_are_read_by_offset_timestamp_and_key_and_through_a_view() {
        let (state, _dir) = crate::tests::state();
        create_topic(&state, "events", 2, &[]).await;
        create_topic(
            &state,
            "vip",
            2,
            &[("weir.view.source", "events"), (VIEW_TAGS, "VIP")],
        )
        .await;
        let tag = |i: i64| if i % 2 == 0 { "VIP" } else { "STD" };
        let keys = ["k0", "k1", "k2", "k3", "k4", "k5"];
        let records: Vec<_> = (0..6_i64)
            .map(|i| {
                let key = keys[usize::try_from(i).expect("small")];
                let headers: &[(&str, &str)] = match tag(i) {
                    "VIP" => &[("weir.tag", "VIP")],
                    _ => &[("weir.tag", "STD")],
                };
                (key, &b"{}"[..], 100 + i * 10, headers)
            })
            .collect();
        produce(&state, "events", 1, &records).await;
        let offsets =
            |page: &MessagePage| -> Vec<i64> { page.records.iter().map(|r| r.offset).collect() };

        let page = read_messages(
            &state,
            "events",
            MessageQuery {
                partition: Some(1),
                ..query(Start::Offset(2), 3)
            },
        )
        .await
        .expect("by offset");
        assert_eq!(offsets(&page), [2, 3, 4]);
        assert_eq!(page.partitions[0].next_offset, Some(5));
        assert!(!page.cut);
        let first = &page.records[0];
        assert_eq!(
            (first.timestamp_ms, first.timestamp_type),
            (120, "create_time")
        );
        assert_eq!(
            first.key.as_ref().map(|k| k.data.clone()),
            Some(Value::from("k2"))
        );
        assert_eq!(
            first.headers[0].value.as_ref().map(|v| v.data.clone()),
            Some(Value::from("VIP"))
        );

        let page = read_messages(
            &state,
            "events",
            MessageQuery {
                partition: Some(1),
                ..query(Start::Timestamp(135), 1)
            },
        )
        .await
        .expect("by timestamp");
        assert_eq!(offsets(&page), [4]);

        // Every partition in turn, the empty one first.
        let page = read_messages(
            &state,
            "events",
            MessageQuery {
                key: Some(b"k3".to_vec()),
                ..query(Start::LogStart, 10)
            },
        )
        .await
        .expect("by key");
        assert_eq!(offsets(&page), [3]);
        assert_eq!(page.scanned_records, 6);
        assert_eq!(page.partitions.len(), 2);

        let page = read_messages(
            &state,
            "vip",
            MessageQuery {
                partition: Some(1),
                ..query(Start::LogStart, 10)
            },
        )
        .await
        .expect("a view");
        assert_eq!(offsets(&page), [0, 2, 4]);

        let err = read_messages(
            &state,
            "events",
            MessageQuery {
                partition: Some(2),
                ..query(Start::LogStart, 1)
            },
        )
        .await
        .expect_err("no partition 2");
        assert_eq!(err.status(), StatusCode::NOT_FOUND);
    }

    #[test]
    fn each_format_renders_and_cuts_as_documented() {
        assert_eq!(
            show(b"hello", Format::Utf8, 1024),
            Shown {
                data: Value::String("hello".into()),
                size: 5,
                cut: false
            }
        );
        assert_eq!(
            show(br#"{"a":1}"#, Format::Json, 1024).data,
            serde_json::json!({"a": 1})
        );
        assert_eq!(
            show(b"not json", Format::Json, 1024).data,
            Value::String("not json".into())
        );
        assert_eq!(show(&[0x00, 0xff, 0x10], Format::Hex, 1024).data, "00ff10");
        let cut = show(b"abcdef", Format::Hex, 2);
        assert_eq!((cut.data, cut.size, cut.cut), ("6162".into(), 6, true));
        // A cut through a character leaves it out; bad bytes are U+FFFD.
        assert_eq!(show("héllo".as_bytes(), Format::Utf8, 2).data, "h");
        assert_eq!(show(&[b'a', 0xff], Format::Utf8, 10).data, "a\u{fffd}");
        // A cut JSON value is shown as its text.
        assert_eq!(show(br#"{"a":1}"#, Format::Json, 4).data, r#"{"a""#);
    }

    fn params(query: &str) -> Result<MessageQuery, AdminError> {
        let uri: axum::http::Uri = format!("/x?{query}").parse().expect("uri");
        let Query(params) = Query::<MessagesParams>::try_from_uri(&uri)
            .map_err(|e| AdminError::bad_request(e.body_text()))?;
        MessageQuery::checked(params)
    }

    #[test]
    fn query_values_past_a_bound_or_that_do_not_parse_are_refused() {
        for bad in [
            "limit=1001",
            "bytes=65537",
            "offset=-1",
            "offset=1&timestamp=2",
            "format=base64",
            "isolation=dirty",
            "partition=x",
        ] {
            let err = params(bad).expect_err(bad);
            assert_eq!(err.status(), StatusCode::BAD_REQUEST, "{bad}");
        }
        let ok = params("partition=2&timestamp=5&key=k&limit=7&format=hex&bytes=3").expect("ok");
        assert_eq!(ok.partition, Some(2));
        assert_eq!(ok.start, Start::Timestamp(5));
        assert_eq!(ok.key.as_deref(), Some(&b"k"[..]));
        assert_eq!((ok.limit, ok.format, ok.bytes), (7, Format::Hex, 3));
        assert_eq!(ok.isolation, Isolation::ReadCommitted);
        let defaults = params("").expect("defaults");
        assert_eq!(
            (defaults.limit, defaults.bytes),
            (LIMIT_DEFAULT, SHOWN_BYTES_DEFAULT)
        );
        assert_eq!(defaults.start, Start::LogStart);
    }
}
