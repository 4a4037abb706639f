//! Delayed delivery, as bytes: which records of a batch wait for a later
//! time, when each is due, and the batch of copies that delivers them.
//!
//! A producer asks for delayed delivery with a record header: relative
//! ([`DELAY_MS_HEADER`]) or absolute ([`DELIVER_AT_HEADER`]). Such a record
//! is a *pending original*: it is stored in its partition like any other,
//! but fetches leave it out ([`filter_pending`]). Once it is due, the
//! broker's mover appends a *copy* of it to the same partition
//! ([`copy_records`], [`copies_batch`]): the original's key, value and headers byte for byte,
//! plus [`DELAYED_FROM_HEADER`] (the original's offset) and
//! [`PRODUCE_TIME_HEADER`] (its timestamp). A copy keeps the original's
//! delay header too, so a record carrying [`DELAYED_FROM_HEADER`] is a copy
//! and never pending, whatever else it carries.
//!
//! Headers are read in place and compared as raw bytes ([`crate::records`]),
//! never decoded into a map, so duplicate keys count: a delay header set
//! twice is an error, not "the last one wins". This module knows nothing of
//! partitions, clocks or the broker: the caller passes the time.
//!
//! A pending original is cancelled by a *cancel marker* the broker
//! appends to the same partition ([`cancel_batch`], for `weir delayed
//! cancel`): a record with no key or value whose [`DELAY_CANCEL_HEADER`]
//! names the original's offset. Fetches leave markers out too.
//!
//! A producer's malformed delay header is refused when produced
//! ([`validate`]). A stored record with one (written before delayed
//! delivery existed) is not pending: it is delivered as it is.

use std::ops::Range;

use crate::batch::RecordBatchHeader as H;
use crate::rebuild::{BatchParseError, ParsedBatch, records_of};
use crate::records::{RecordFrame, RecordFramingError, read_varint, record_headers};
use crate::tags::{
    FilterError, Filtered, TAG_FILTER_DECOMPRESSED_BYTES_MAX, TagExpr, empty_batch, filter_batch,
    filter_records,
};

/// The record header asking for delivery this many milliseconds after the
/// record's timestamp (decimal ASCII).
pub const DELAY_MS_HEADER: &str = "weir.delay-ms";
/// The record header asking for delivery at this time, in milliseconds
/// since the Unix epoch (decimal ASCII).
pub const DELIVER_AT_HEADER: &str = "weir.deliver-at-ms";
/// The record header the broker sets on a delivered copy: the pending
/// original's offset (decimal ASCII). Producers may not set it.
pub const DELAYED_FROM_HEADER: &str = "weir.delayed-from-offset";
/// The record header the broker sets on a delivered copy: the original's
/// timestamp in milliseconds (decimal ASCII).
pub const PRODUCE_TIME_HEADER: &str = "weir.produce-time-ms";
/// The one header of a cancel marker, which only the broker appends: the
/// offset of the pending original it cancels (decimal ASCII). Producers
/// may not set it.
pub const DELAY_CANCEL_HEADER: &str = "weir.delay-cancel";

/// The bytes every header that makes a record pending or a copy starts
/// with: a records section without them holds neither.
const DELAY_KEY_PREFIX: &[u8] = b"weir.de";
/// How far ahead of now a produced record may be due, and the config that
/// sets it (named in [`validate`]'s messages): `weir.delay.max.ms`, or
/// `retention.ms` when that is shorter, since retention must not delete a
/// record before it is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DelayBound<'a> {
    /// The longest delay, in milliseconds.
    pub max_ms: i64,
    /// The config it comes from.
    pub config: &'a str,
}
/// The most bad records [`validate`] lists for one batch.
pub const DELAY_ERRORS_MAX: usize = 1000;
/// The most bytes of a refused header value quoted in a message.
const VALUE_SHOWN_BYTES_MAX: usize = 64;
/// The bytes the two headers of a copy add at most: their keys and
/// lengths, and two i64s in decimal.
const COPY_HEADERS_BYTES_MAX: usize = 2 * (2 + 24 + 2 + 20);

const DELAY_MS: &[u8] = DELAY_MS_HEADER.as_bytes();
const DELIVER_AT: &[u8] = DELIVER_AT_HEADER.as_bytes();
const DELAYED_FROM: &[u8] = DELAYED_FROM_HEADER.as_bytes();
const DELAY_CANCEL: &[u8] = DELAY_CANCEL_HEADER.as_bytes();

/// Why delayed-delivery records of a stored batch cannot be read or copied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DelayError {
    /// The batch's records or headers cannot be read.
    #[error("a batch cannot be read for delayed delivery: {0}")]
    Unreadable(#[from] BatchParseError),
    /// No record of the batch given has this offset.
    #[error("offset {offset} is not in the batch given for it")]
    OffsetNotFound {
        /// The offset asked for.
        offset: i64,
    },
    /// The record at this offset is not a pending original (a plain record,
    /// a delivered copy, a record of a control batch, or one whose delay
    /// headers are malformed).
    #[error("the record at offset {offset} is not a pending delayed record")]
    NotPending {
        /// The offset asked for.
        offset: i64,
    },
    /// A delivered copy's [`DELAYED_FROM_HEADER`] is not one offset.
    #[error("the delivered copy at offset delta {offset_delta}: {problem}")]
    BadDelayedFrom {
        /// The copy's offset delta in its batch.
        offset_delta: i32,
        /// What is wrong with the header, naming it.
        problem: String,
    },
    /// A cancel marker's [`DELAY_CANCEL_HEADER`] is not one offset.
    #[error("the cancel marker at offset delta {offset_delta}: {problem}")]
    BadCancel {
        /// The marker's offset delta in its batch.
        offset_delta: i32,
        /// What is wrong with the header, naming it.
        problem: String,
    },
    /// [`copies_batch`] or [`cancel_batch`] was given no record.
    #[error("a batch of delivered copies or cancel markers needs at least one record")]
    NoOriginals,
    /// The copies do not fit one batch (`i32` length and offset delta).
    #[error("{records} delivered copies do not fit one batch")]
    TooLarge {
        /// The originals given.
        records: usize,
    },
}

/// Why [`validate`] refused a produced batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidateError {
    /// The batch's records or headers cannot be read.
    #[error("a batch cannot be read for delayed delivery: {0}")]
    Unreadable(#[from] BatchParseError),
    /// Records whose delayed-delivery headers are refused, in order, at
    /// most [`DELAY_ERRORS_MAX`].
    #[error("{} records have refused delayed-delivery headers, the first {}", .0.len(), first(.0))]
    BadRecords(Vec<BadRecord>),
}

/// The first of `bad`, for [`ValidateError::BadRecords`]'s message.
fn first(bad: &[BadRecord]) -> String {
    bad.first().map(BadRecord::to_string).unwrap_or_default()
}

/// One record [`validate`] refused: Kafka's `RecordError` of a produce
/// response. Its display is `record <index>: <message>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("record {index}: {message}")]
pub struct BadRecord {
    /// The record's position in its batch, from 0 (Kafka's `batchIndex`).
    pub index: usize,
    /// Why, naming the header (Kafka's `batchIndexErrorMessage`).
    pub message: String,
}

/// A pending original found by [`scan_delays`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PendingRecord {
    /// Its offset minus the batch's base offset.
    pub offset_delta: i32,
    /// Its timestamp (the batch's max timestamp under `LogAppendTime`).
    pub timestamp_ms: i64,
    /// When it is due, in milliseconds since the Unix epoch.
    pub due_ms: i64,
}

/// A delivered copy found by [`scan_delays`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DelayedCopy {
    /// Its offset minus the batch's base offset.
    pub offset_delta: i32,
    /// The offset of the pending original it delivers.
    pub delayed_from: i64,
}

/// A cancel marker found by [`scan_delays`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DelayCancel {
    /// Its offset minus the batch's base offset.
    pub offset_delta: i32,
    /// The offset of the pending original it cancels.
    pub cancelled: i64,
}

/// The delayed-delivery records of one stored batch, in offset order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DelayScan {
    /// Pending originals.
    pub pending: Vec<PendingRecord>,
    /// Delivered copies.
    pub copies: Vec<DelayedCopy>,
    /// Cancel markers.
    pub cancels: Vec<DelayCancel>,
}

impl DelayScan {
    /// Whether the batch holds no pending original, copy or cancel marker.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty() && self.copies.is_empty() && self.cancels.is_empty()
    }
}

/// Whether `batch`, one whole stored or produced batch, may hold a pending
/// original or a copy, without parsing it: the cheap test of every append.
/// False for a control batch and for bytes too short for a batch header.
/// An uncompressed batch may hold one only when its records section holds
/// the bytes `weir.de` (every such header key starts with them); a
/// compressed one always may, as only decompressing it tells.
pub fn may_hold_delays(batch: &[u8]) -> bool {
    let Some(header) = H::parse(batch) else {
        return false;
    };
    if header.is_control() {
        return false;
    }
    if header.codec() != 0 {
        return true;
    }
    section_may_hold_delays(batch.get(H::BYTES..).unwrap_or_default())
}

/// Whether a records section, decompressed, may hold a delay header: it
/// holds the bytes `weir.de`.
pub(crate) fn section_may_hold_delays(records: &[u8]) -> bool {
    memchr::memmem::find(records, DELAY_KEY_PREFIX).is_some()
}

/// `batch` parsed, when its decompressed records may hold a delay header;
/// `None` when they cannot (no record is read then).
fn parse_if_delayed(batch: &[u8]) -> Result<Option<ParsedBatch<'_>>, BatchParseError> {
    let (header, records) = records_of(batch, TAG_FILTER_DECOMPRESSED_BYTES_MAX)?;
    if !section_may_hold_delays(&records) {
        return Ok(None);
    }
    ParsedBatch::from_records(batch, header, records).map(Some)
}

/// Whether the queue index should mark `batch`, one whole stored batch, as
/// holding delayed-delivery records: a pending original or a copy
/// ([`scan_delays`] finds one). A batch that passes [`may_hold_delays`]
/// but cannot be read (it does not decompress, or within 64 MiB; or its
/// records hold a delay header's first bytes and cannot be walked, or a
/// copy's offset is malformed) is marked too, so a record that might be
/// pending is never served unfiltered: its reader parses it and decides.
pub fn delay_mark(batch: &[u8]) -> bool {
    may_hold_delays(batch) && scan_delays(batch).map_or(true, |scan| !scan.is_empty())
}

/// Every pending original and delivered copy of `batch`, one whole stored
/// batch. A control batch, or one that fails [`may_hold_delays`], holds
/// none and is not parsed; nor is one whose decompressed records lack a
/// delay header's first bytes. A record whose delay headers are malformed is
/// not pending (stored data is delivered as it is); a copy whose
/// [`DELAYED_FROM_HEADER`] is malformed is an error. Records are
/// decompressed to at most 64 MiB.
pub fn scan_delays(batch: &[u8]) -> Result<DelayScan, DelayError> {
    if !may_hold_delays(batch) {
        return Ok(DelayScan::default());
    }
    match parse_if_delayed(batch)? {
        Some(parsed) => scan_parsed(&parsed),
        None => Ok(DelayScan::default()),
    }
}

/// [`scan_delays`] of a data batch already parsed.
pub(crate) fn scan_parsed(parsed: &ParsedBatch<'_>) -> Result<DelayScan, DelayError> {
    let mut scan = DelayScan::default();
    for frame in &parsed.frames {
        let headers = delay_headers(&parsed.records, frame).map_err(BatchParseError::from)?;
        let offset_delta = offset_delta_of(frame)?;
        match stored_kind(&headers) {
            Stored::Plain => {}
            Stored::Copy(Ok(delayed_from)) => scan.copies.push(DelayedCopy {
                offset_delta,
                delayed_from,
            }),
            Stored::Copy(Err(bad)) => {
                return Err(DelayError::BadDelayedFrom {
                    offset_delta,
                    problem: bad.describe(DELAYED_FROM_HEADER, "offset"),
                });
            }
            Stored::Cancel(Ok(cancelled)) => scan.cancels.push(DelayCancel {
                offset_delta,
                cancelled,
            }),
            Stored::Cancel(Err(bad)) => {
                return Err(DelayError::BadCancel {
                    offset_delta,
                    problem: bad.describe(DELAY_CANCEL_HEADER, "offset"),
                });
            }
            Stored::Pending(delay) => {
                let timestamp_ms = parsed.timestamp(frame);
                scan.pending.push(PendingRecord {
                    offset_delta,
                    timestamp_ms,
                    due_ms: delay.due_ms(timestamp_ms),
                });
            }
        }
    }
    Ok(scan)
}

/// Check the delayed-delivery headers of `batch`, one whole batch a
/// producer sent, at `now_ms`: whether it holds a pending record, or every
/// record refused (at most [`DELAY_ERRORS_MAX`]). A record is refused when
/// it carries [`DELAYED_FROM_HEADER`] (only the broker sets it), when a
/// delay header is null, not a plain decimal integer (an optional `-` then
/// digits, fitting an i64), negative or set twice, when both delay headers
/// are set, or when it is due more than `bound` after `now_ms`
/// (a time already past is fine: it is delivered at once). A record's due
/// time counts from its timestamp as the batch now stands, so a caller
/// that stamps `LogAppendTime` validates after stamping. Records are
/// decompressed to at most 64 MiB.
pub fn validate(batch: &[u8], now_ms: i64, bound: DelayBound<'_>) -> Result<bool, ValidateError> {
    if !may_hold_delays(batch) {
        return Ok(false);
    }
    match parse_if_delayed(batch)? {
        Some(parsed) => validate_parsed(&parsed, now_ms, bound),
        None => Ok(false),
    }
}

/// [`validate`] of a produced data batch already parsed.
pub(crate) fn validate_parsed(
    parsed: &ParsedBatch<'_>,
    now_ms: i64,
    bound: DelayBound<'_>,
) -> Result<bool, ValidateError> {
    let (mut pending, mut bad) = (false, Vec::new());
    for (index, frame) in parsed.frames.iter().enumerate() {
        let headers = delay_headers(&parsed.records, frame).map_err(BatchParseError::from)?;
        match check_produced(&headers, parsed.timestamp(frame), now_ms, bound) {
            Ok(is_pending) => pending |= is_pending,
            Err(message) => bad.push(BadRecord { index, message }),
        }
        if bad.len() >= DELAY_ERRORS_MAX {
            break;
        }
    }
    if !bad.is_empty() {
        return Err(ValidateError::BadRecords(bad));
    }
    Ok(pending)
}

/// Whether a fetch keeps the record `frame` of the records section
/// `records`: every record but a pending original or a cancel marker.
/// Every header is read, so a malformed record is an error.
pub fn keep_unless_pending(
    records: &[u8],
    frame: &RecordFrame,
) -> Result<bool, RecordFramingError> {
    let headers = delay_headers(records, frame)?;
    Ok(!matches!(
        stored_kind(&headers),
        Stored::Pending(_) | Stored::Cancel(_)
    ))
}

/// What a fetch sends of `batch`, one whole stored batch: its records but
/// pending originals, and with a `view` only those its expression matches
/// ([`filter_batch`]). A batch that fails [`may_hold_delays`] is left to
/// the view alone, and a control batch passes whole.
pub fn filter_pending(batch: &[u8], view: Option<&TagExpr>) -> Result<Filtered, FilterError> {
    let view = view.filter(|expr| !expr.is_all());
    if !may_hold_delays(batch) {
        return match view {
            Some(expr) => filter_batch(batch, expr),
            None => Ok(Filtered::Whole),
        };
    }
    filter_records(batch, |records, frame| {
        Ok(keep_unless_pending(records, frame)?
            && view.map_or(Ok(true), |expr| expr.matches(records, frame))?)
    })
}

/// The copy of one pending original, made by [`copy_records`] and framed
/// into a batch by [`copies_batch`]: the original's key, value and headers
/// byte for byte (duplicate keys and all), then [`DELAYED_FROM_HEADER`]
/// (the original's offset) and [`PRODUCE_TIME_HEADER`] (its timestamp).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyRecord {
    /// The pending original's offset.
    original: i64,
    /// The record's bytes from its key on (key, value, headers).
    tail: Vec<u8>,
}

impl CopyRecord {
    /// The pending original's offset.
    pub fn original(&self) -> i64 {
        self.original
    }

    /// The most bytes it takes in a batch of copies: its tail, its length,
    /// attributes, timestamp delta and offset delta.
    pub fn framed_bytes_max(&self) -> usize {
        self.tail.len() + 5 + 1 + 1 + 5
    }
}

/// The copies of `originals`, each a stored batch and the offset of a
/// pending original in it: one result per original, in order. Originals in
/// one batch (the same slice) share one decompression of it, in whatever
/// order they come; records are decompressed to at most 64 MiB, one batch
/// at a time.
///
/// An original whose batch cannot be read, whose offset is not in it, or
/// that is not pending is an error; the mover logs and drops it.
pub fn copy_records(originals: &[(&[u8], i64)]) -> Vec<Result<CopyRecord, DelayError>> {
    // Originals by the batch they are in, first seen first.
    let mut by_batch: Vec<(&[u8], Vec<usize>)> = Vec::new();
    let mut slot_of: std::collections::HashMap<(*const u8, usize), usize> =
        std::collections::HashMap::new();
    for (i, &(batch, _)) in originals.iter().enumerate() {
        let key = (batch.as_ptr(), batch.len());
        let slot = *slot_of.entry(key).or_insert_with(|| {
            by_batch.push((batch, Vec::new()));
            by_batch.len() - 1
        });
        if let Some((_, indexes)) = by_batch.get_mut(slot) {
            indexes.push(i);
        }
    }
    // Every original is in exactly one group: each slot is overwritten.
    let mut out: Vec<Result<CopyRecord, DelayError>> = originals
        .iter()
        .map(|&(_, offset)| Err(DelayError::OffsetNotFound { offset }))
        .collect();
    for (batch, indexes) in by_batch {
        // A batch is framed only as far as the last record wanted of it
        // (the feed framed it whole): records due together are mostly from
        // different batches, each one wanted for a record or a few.
        let last = indexes
            .iter()
            .filter_map(|&i| originals.get(i).map(|&(_, offset)| offset))
            .max()
            .unwrap_or(i64::MAX);
        let parsed = ParsedBatch::parse_through(batch, TAG_FILTER_DECOMPRESSED_BYTES_MAX, last);
        for i in indexes {
            let Some(&(_, offset)) = originals.get(i) else {
                continue;
            };
            let copy = match &parsed {
                Ok(parsed) => copy_of(parsed, offset),
                Err(e) => Err(DelayError::Unreadable(e.clone())),
            };
            if let Some(slot) = out.get_mut(i) {
                *slot = copy;
            }
        }
    }
    out
}

/// One new uncompressed batch of `copies`, stamped `now_ms`: record `i`
/// is copy `i` at offset delta `i`, timestamp delta 0 and attributes 0.
/// The batch is magic 2, base offset 0 (the append sets it), partition
/// leader epoch -1, attributes 0 (`CreateTime`, no codec), no producer
/// (id, epoch and base sequence -1), base and max timestamp `now_ms`, with
/// its CRC32C.
pub fn copies_batch(copies: &[CopyRecord], now_ms: i64) -> Result<Vec<u8>, DelayError> {
    let tails: Vec<&[u8]> = copies.iter().map(|c| c.tail.as_slice()).collect();
    broker_batch(&tails, now_ms)
}

/// One new batch of cancel markers, stamped `now_ms`: record `i` cancels
/// the pending original at `offsets[i]`, with a null key and value and
/// one header, [`DELAY_CANCEL_HEADER`]. Laid out as [`copies_batch`]'s.
pub fn cancel_batch(offsets: &[i64], now_ms: i64) -> Result<Vec<u8>, DelayError> {
    let tails: Vec<Vec<u8>> = offsets
        .iter()
        .map(|&offset| {
            let mut tail = Vec::with_capacity(COPY_HEADERS_BYTES_MAX);
            put_bytes(&mut tail, None); // key
            put_bytes(&mut tail, None); // value
            put_varint(&mut tail, 1);
            put_header(&mut tail, DELAY_CANCEL, offset);
            tail
        })
        .collect();
    let tails: Vec<&[u8]> = tails.iter().map(Vec::as_slice).collect();
    broker_batch(&tails, now_ms)
}

/// The batch of [`copies_batch`] and [`cancel_batch`]: record `i` is
/// `tails[i]` (its bytes from the key on) at offset delta `i`.
fn broker_batch(tails: &[&[u8]], now_ms: i64) -> Result<Vec<u8>, DelayError> {
    let too_large = || DelayError::TooLarge {
        records: tails.len(),
    };
    let count = i32::try_from(tails.len()).map_err(|_| too_large())?;
    if count == 0 {
        return Err(DelayError::NoOriginals);
    }
    // An empty data batch spanning the records' offsets is the header
    // wanted, all but its length, record count and CRC.
    let mut out = empty_batch(0, i64::from(count) - 1, now_ms, 0).ok_or_else(too_large)?;
    out.reserve(tails.iter().map(|t| t.len() + 12).sum());
    let mut head = Vec::with_capacity(8);
    for (offset_delta, tail) in (0i64..).zip(tails) {
        head.clear();
        head.push(0); // attributes
        put_varint(&mut head, 0); // timestamp delta: the record's time is the batch's
        put_varint(&mut head, offset_delta);
        let length = i64::try_from(head.len() + tail.len()).map_err(|_| too_large())?;
        put_varint(&mut out, length);
        out.extend_from_slice(&head);
        out.extend_from_slice(tail);
    }
    let batch_length = out
        .len()
        .checked_sub(H::LOG_OVERHEAD_BYTES)
        .and_then(|n| i32::try_from(n).ok())
        .ok_or_else(too_large)?;
    put(&mut out, H::BATCH_LENGTH_AT, &batch_length.to_be_bytes()).ok_or_else(too_large)?;
    put(&mut out, H::RECORD_COUNT_AT, &count.to_be_bytes()).ok_or_else(too_large)?;
    let crc = crc32c::crc32c(out.get(H::ATTRIBUTES_AT..).unwrap_or_default());
    put(&mut out, H::CRC_AT, &crc.to_be_bytes()).ok_or_else(too_large)?;
    Ok(out)
}

/// [`copy_records`] then [`copies_batch`]: the first error, or one batch.
#[cfg(test)]
pub(crate) fn copy_batch(originals: &[(&[u8], i64)], now_ms: i64) -> Result<Vec<u8>, DelayError> {
    if originals.is_empty() {
        return Err(DelayError::NoOriginals);
    }
    let copies = copy_records(originals)
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?;
    copies_batch(&copies, now_ms)
}

/// Write `value` at `at` of `out`; `None` when `out` is too short.
fn put(out: &mut [u8], at: usize, value: &[u8]) -> Option<()> {
    let end = at.checked_add(value.len())?;
    out.get_mut(at..end)?.copy_from_slice(value);
    Some(())
}

/// The frame of the pending original at `offset` in `parsed`.
fn pending_frame<'p>(
    parsed: &'p ParsedBatch<'_>,
    offset: i64,
) -> Result<&'p RecordFrame, DelayError> {
    let base = parsed.header.base_offset;
    let frame = parsed
        .frames
        .iter()
        .find(|f| base.checked_add(f.offset_delta) == Some(offset))
        .ok_or(DelayError::OffsetNotFound { offset })?;
    if parsed.header.is_control() {
        return Err(DelayError::NotPending { offset });
    }
    let headers = delay_headers(&parsed.records, frame).map_err(BatchParseError::from)?;
    match stored_kind(&headers) {
        Stored::Pending(_) => Ok(frame),
        Stored::Plain | Stored::Copy(_) | Stored::Cancel(_) => {
            Err(DelayError::NotPending { offset })
        }
    }
}

/// A pending original as tools show it ([`pending_record`]): key, value
/// and header values cut to the bytes asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingView {
    /// Its timestamp.
    pub timestamp_ms: i64,
    /// When it is due, in milliseconds since the Unix epoch.
    pub due_ms: i64,
    /// Its key (`None`: null), cut.
    pub key: Option<Vec<u8>>,
    /// Its value (`None`: null), cut.
    pub value: Option<Vec<u8>>,
    /// The value's length before the cut.
    pub value_len: usize,
    /// Its headers in order, duplicates kept, values cut.
    pub headers: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl PendingView {
    /// The bytes its key, value and headers hold, as cut.
    pub fn bytes(&self) -> usize {
        let field = |f: &Option<Vec<u8>>| f.as_ref().map_or(0, Vec::len);
        field(&self.key)
            + field(&self.value)
            + self
                .headers
                .iter()
                .map(|(k, v)| k.len() + field(v))
                .sum::<usize>()
    }
}

/// The pending original at `offset` in `batch`, one whole stored batch,
/// with each key, value and header value cut to `bytes_max` bytes.
pub fn pending_record(
    batch: &[u8],
    offset: i64,
    bytes_max: usize,
) -> Result<PendingView, DelayError> {
    let parsed = ParsedBatch::parse(batch, TAG_FILTER_DECOMPRESSED_BYTES_MAX)?;
    let frame = pending_frame(&parsed, offset)?;
    let records: &[u8] = &parsed.records;
    let framing = || {
        DelayError::Unreadable(BatchParseError::Framing(RecordFramingError {
            at: frame.bytes.start,
        }))
    };
    let cut = |bytes: &[u8]| bytes.get(..bytes_max).unwrap_or(bytes).to_vec();
    let headers = delay_headers(records, frame).map_err(BatchParseError::from)?;
    let Stored::Pending(delay) = stored_kind(&headers) else {
        return Err(DelayError::NotPending { offset });
    };
    let timestamp_ms = parsed.timestamp(frame);
    let mut shown = Vec::new();
    for header in record_headers(records, frame) {
        let header = header.map_err(BatchParseError::from)?;
        let key = records.get(header.key).ok_or_else(framing)?;
        let value = match header.value {
            None => None,
            Some(range) => Some(cut(records.get(range).ok_or_else(framing)?)),
        };
        shown.push((cut(key), value));
    }
    let value = field(records, frame.value.as_ref()).ok_or_else(framing)?;
    Ok(PendingView {
        timestamp_ms,
        due_ms: delay.due_ms(timestamp_ms),
        key: field(records, frame.key.as_ref())
            .ok_or_else(framing)?
            .map(cut),
        value_len: value.map_or(0, <[u8]>::len),
        value: value.map(cut),
        headers: shown,
    })
}

/// The copy of the pending original at `offset` in `parsed`.
fn copy_of(parsed: &ParsedBatch<'_>, offset: i64) -> Result<CopyRecord, DelayError> {
    let frame = pending_frame(parsed, offset)?;
    let records: &[u8] = &parsed.records;
    let framing = || {
        DelayError::Unreadable(BatchParseError::Framing(RecordFramingError {
            at: frame.bytes.start,
        }))
    };
    let tail = records
        .get(frame.headers_at..frame.bytes.end)
        .ok_or_else(framing)?;
    let (header_count, count_bytes) = read_varint(tail).ok_or_else(framing)?;
    let headers = tail.get(count_bytes..).ok_or_else(framing)?;
    let key = field(records, frame.key.as_ref()).ok_or_else(framing)?;
    let value = field(records, frame.value.as_ref()).ok_or_else(framing)?;
    let mut out = Vec::with_capacity(frame.bytes.len() + COPY_HEADERS_BYTES_MAX);
    put_bytes(&mut out, key);
    put_bytes(&mut out, value);
    put_varint(&mut out, header_count.checked_add(2).ok_or_else(framing)?);
    out.extend_from_slice(headers);
    put_header(&mut out, DELAYED_FROM, offset);
    put_header(
        &mut out,
        PRODUCE_TIME_HEADER.as_bytes(),
        parsed.timestamp(frame),
    );
    Ok(CopyRecord {
        original: offset,
        tail: out,
    })
}

/// The bytes of a key or value `range` of `records` (`Some(None)` for a
/// null one); `None` when the range is outside them.
fn field<'a>(records: &'a [u8], range: Option<&Range<usize>>) -> Option<Option<&'a [u8]>> {
    match range {
        None => Some(None),
        Some(range) => records.get(range.clone()).map(Some),
    }
}

/// Append a record header: `key`, and `value` in decimal ASCII.
fn put_header(out: &mut Vec<u8>, key: &[u8], value: i64) {
    put_bytes(out, Some(key));
    put_bytes(out, Some(value.to_string().as_bytes()));
}

/// Append a varint length (-1 for `None`) and the bytes.
fn put_bytes(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        None => put_varint(out, -1),
        Some(bytes) => {
            // A slice is never longer than isize::MAX bytes.
            put_varint(out, i64::try_from(bytes.len()).unwrap_or(i64::MAX));
            out.extend_from_slice(bytes);
        }
    }
}

/// Append `v` as a zigzag varint, as Kafka encodes record fields.
fn put_varint(out: &mut Vec<u8>, v: i64) {
    let mut zigzag = ((v << 1) ^ (v >> 63)) as u64;
    while zigzag >= 0x80 {
        out.push((zigzag as u8) | 0x80);
        zigzag >>= 7;
    }
    out.push(zigzag as u8);
}

/// `frame`'s offset delta, which Kafka frames as a 32-bit varint.
fn offset_delta_of(frame: &RecordFrame) -> Result<i32, BatchParseError> {
    i32::try_from(frame.offset_delta).map_err(|_| {
        BatchParseError::Framing(RecordFramingError {
            at: frame.bytes.start,
        })
    })
}

/// Why [`check_produced`] refuses a record, naming the header; `Ok` says
/// whether it is pending.
fn check_produced(
    headers: &DelayHeaders<'_>,
    timestamp_ms: i64,
    now_ms: i64,
    bound: DelayBound<'_>,
) -> Result<bool, String> {
    if headers.delayed_from.is_set() {
        return Err(format!(
            "{DELAYED_FROM_HEADER} is set by the broker on delivered copies, never by a producer"
        ));
    }
    if headers.cancel.is_set() {
        return Err(format!(
            "{DELAY_CANCEL_HEADER} is set by the broker on the markers of `weir delayed cancel`, \
             never by a producer"
        ));
    }
    let Some(delay) = headers.delay().map_err(|bad| bad.describe())? else {
        return Ok(false);
    };
    let due_ms = delay.due_ms(timestamp_ms);
    if due_ms.saturating_sub(now_ms) > bound.max_ms {
        return Err(format!(
            "{} makes it due at {due_ms} ms, more than {} ({} ms) after now ({now_ms} ms)",
            delay.header(),
            bound.config,
            bound.max_ms
        ));
    }
    Ok(true)
}

/// What a stored record is to delayed delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Stored {
    /// Neither pending nor a copy: delivered as it is.
    Plain,
    /// A delivered copy, with the original's offset or why it is unreadable.
    Copy(Result<i64, BadValue>),
    /// A cancel marker, with the cancelled original's offset or why it is
    /// unreadable.
    Cancel(Result<i64, BadValue>),
    /// A pending original.
    Pending(Delay),
}

/// What a stored record with `headers` is: a copy whatever else it
/// carries, else a cancel marker, else pending when its delay headers are
/// well formed.
fn stored_kind(headers: &DelayHeaders<'_>) -> Stored {
    let offset = |slot: Slot<'_>| slot.value().and_then(|v| v.ok_or(BadValue::Null));
    if headers.delayed_from.is_set() {
        return Stored::Copy(offset(headers.delayed_from));
    }
    if headers.cancel.is_set() {
        return Stored::Cancel(offset(headers.cancel));
    }
    match headers.delay() {
        Ok(Some(delay)) => Stored::Pending(delay),
        Ok(None) | Err(_) => Stored::Plain,
    }
}

/// The delay a pending record asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Delay {
    /// [`DELAY_MS_HEADER`]: this many milliseconds after its timestamp.
    After(i64),
    /// [`DELIVER_AT_HEADER`]: at this time.
    At(i64),
}

impl Delay {
    /// When a record stamped `timestamp_ms` is due.
    fn due_ms(self, timestamp_ms: i64) -> i64 {
        match self {
            Self::After(delay_ms) => timestamp_ms.saturating_add(delay_ms),
            Self::At(at_ms) => at_ms,
        }
    }

    /// The header it came from.
    fn header(self) -> &'static str {
        match self {
            Self::After(_) => DELAY_MS_HEADER,
            Self::At(_) => DELIVER_AT_HEADER,
        }
    }
}

/// The delayed-delivery headers of one record, read in one walk over all
/// its headers.
#[derive(Debug, Default)]
struct DelayHeaders<'a> {
    delay_ms: Slot<'a>,
    deliver_at_ms: Slot<'a>,
    delayed_from: Slot<'a>,
    cancel: Slot<'a>,
}

impl DelayHeaders<'_> {
    /// The delay the record asks for; `None` when it carries neither delay
    /// header ([`DELAYED_FROM_HEADER`] is not looked at).
    fn delay(&self) -> Result<Option<Delay>, BadDelay> {
        if self.delay_ms.is_set() && self.deliver_at_ms.is_set() {
            return Err(BadDelay::Both);
        }
        let after = self.delay_ms.value().map_err(|bad| BadDelay::Value {
            header: DELAY_MS_HEADER,
            bad,
        })?;
        let at = self.deliver_at_ms.value().map_err(|bad| BadDelay::Value {
            header: DELIVER_AT_HEADER,
            bad,
        })?;
        Ok(match (after, at) {
            (Some(delay_ms), _) => Some(Delay::After(delay_ms)),
            (None, Some(at_ms)) => Some(Delay::At(at_ms)),
            (None, None) => None,
        })
    }
}

/// What the headers of one key hold in one record.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Slot<'a> {
    /// No header has the key.
    #[default]
    Absent,
    /// One header has it, with this value (`None`: null).
    Once(Option<&'a [u8]>),
    /// More than one header has it.
    Twice,
}

impl<'a> Slot<'a> {
    /// Count one more header with the key, valued `value`.
    fn add(&mut self, value: Option<&'a [u8]>) {
        *self = match self {
            Self::Absent => Self::Once(value),
            Self::Once(_) | Self::Twice => Self::Twice,
        };
    }

    fn is_set(self) -> bool {
        self != Self::Absent
    }

    /// The one value, a plain decimal integer at least 0; `None` when absent.
    fn value(self) -> Result<Option<i64>, BadValue> {
        let value = match self {
            Self::Absent => return Ok(None),
            Self::Twice => return Err(BadValue::Twice),
            Self::Once(None) => return Err(BadValue::Null),
            Self::Once(Some(value)) => value,
        };
        match parse_decimal(value) {
            None => Err(BadValue::NotDecimal(shown(value))),
            Some(n) if n < 0 => Err(BadValue::Negative(n)),
            Some(n) => Ok(Some(n)),
        }
    }
}

/// Why one header's value is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
enum BadValue {
    Twice,
    Null,
    /// The value, as [`shown`].
    NotDecimal(String),
    Negative(i64),
}

impl BadValue {
    /// A message saying what is wrong with `header`, whose value should be
    /// a decimal `what`.
    fn describe(&self, header: &str, what: &str) -> String {
        match self {
            Self::Twice => format!("{header} is set twice"),
            Self::Null => format!("{header} is null, not a decimal {what}"),
            Self::NotDecimal(value) => format!("{header} is not a decimal {what}: {value:?}"),
            Self::Negative(n) => format!("{header} is negative: {n}"),
        }
    }
}

/// Why a record's delay headers are refused.
#[derive(Debug, Clone, PartialEq, Eq)]
enum BadDelay {
    /// One header's value.
    Value { header: &'static str, bad: BadValue },
    /// Both delay headers are set.
    Both,
}

impl BadDelay {
    fn describe(&self) -> String {
        match self {
            Self::Value { header, bad } => bad.describe(header, "number of milliseconds"),
            Self::Both => format!("{DELAY_MS_HEADER} and {DELIVER_AT_HEADER} are both set"),
        }
    }
}

/// The delayed-delivery headers of the record `frame` of `records`. Every
/// header is read, so a malformed record is an error.
fn delay_headers<'a>(
    records: &'a [u8],
    frame: &RecordFrame,
) -> Result<DelayHeaders<'a>, RecordFramingError> {
    let mut found = DelayHeaders::default();
    for header in record_headers(records, frame) {
        let header = header?;
        let slot = match records.get(header.key).unwrap_or_default() {
            DELAY_MS => &mut found.delay_ms,
            DELIVER_AT => &mut found.deliver_at_ms,
            DELAYED_FROM => &mut found.delayed_from,
            DELAY_CANCEL => &mut found.cancel,
            _ => continue,
        };
        slot.add(header.value.map(|v| records.get(v).unwrap_or_default()));
    }
    Ok(found)
}

/// `value` as a plain decimal integer: an optional `-`, then one or more
/// ASCII digits, fitting an i64. No `+`, spaces or other bytes.
fn parse_decimal(value: &[u8]) -> Option<i64> {
    let (negative, digits) = match value.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, value),
    };
    if digits.is_empty() {
        return None;
    }
    let mut n = 0i64;
    for &byte in digits {
        if !byte.is_ascii_digit() {
            return None;
        }
        let digit = i64::from(byte - b'0');
        n = n.checked_mul(10)?;
        n = match negative {
            true => n.checked_sub(digit)?,
            false => n.checked_add(digit)?,
        };
    }
    Some(n)
}

/// A refused header value for a message: at most
/// [`VALUE_SHOWN_BYTES_MAX`] bytes of it, invalid UTF-8 replaced, `...`
/// after a cut.
fn shown(value: &[u8]) -> String {
    let cut = value.get(..VALUE_SHOWN_BYTES_MAX).unwrap_or(value);
    let mut text = String::from_utf8_lossy(cut).into_owned();
    if cut.len() < value.len() {
        text.push_str("...");
    }
    text
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use kafka_protocol::records::RecordBatchDecoder;

    use super::*;
    use crate::batch::{
        control_batch, parse_replica_payload, patch_offsets, stamp_log_append_time,
    };
    use crate::producer::TxnMarker;
    use crate::records::test_records::{Rec, encode_record_parts, make_batch, wrap_records};

    type Headers<'a> = &'a [(&'a [u8], &'a [u8])];
    /// Header pairs whose values may be null.
    type NullableHeaders<'a> = &'a [(&'a [u8], Option<&'a [u8]>)];

    const NOW: i64 = 1_000;
    const MAX: DelayBound<'static> = DelayBound {
        max_ms: 3_600_000,
        config: "weir.delay.max.ms",
    };

    /// A bound of `max_ms` set by `weir.delay.max.ms`.
    fn bound(max_ms: i64) -> DelayBound<'static> {
        DelayBound { max_ms, ..MAX }
    }
    const CODECS: [i16; 5] = [0, 1, 2, 3, 4];
    const BOUND: usize = 1 << 20;

    const PLAIN: Headers = &[(b"x", b"1")];
    const DELAY_5S: Headers = &[(b"weir.delay-ms", b"5000")];
    const AT_9K: Headers = &[(b"weir.deliver-at-ms", b"9000")];
    const VIP_DELAYED: Headers = &[(b"weir.tag", b"VIP"), (b"weir.delay-ms", b"10")];
    const GOLD_COPY: Headers = &[
        (b"weir.tag", b"GOLD"),
        (b"weir.delay-ms", b"10"),
        (b"weir.delayed-from-offset", b"3"),
        (b"weir.produce-time-ms", b"900"),
    ];
    /// Duplicate keys (`x` twice, two tags, one VIP), no delay.
    const DUPLICATES: Headers = &[
        (b"x", b"1"),
        (b"weir.tag", b"BRONZE"),
        (b"x", b"1"),
        (b"weir.tag", b"VIP"),
    ];
    /// A pending original whose headers repeat keys, a null value among them.
    const PENDING_DUPLICATES: NullableHeaders = &[
        (b"x", Some(b"1")),
        (b"weir.deliver-at-ms", Some(b"7000")),
        (b"x", Some(b"1")),
        (b"y", None),
        (b"", Some(b"")),
    ];

    fn record<'a>(value: &'a str, headers: Headers<'a>, ts: i64) -> Rec<'a> {
        Rec {
            key: Some(b"k"),
            value: Some(value.as_bytes()),
            headers,
            ts,
        }
    }

    /// A batch of one record with `headers` (values may be null), stamped `ts`.
    fn one(headers: NullableHeaders, ts: i64) -> Bytes {
        let raw = encode_record_parts(0, 0, Some(b"k"), Some(b"v"), headers);
        wrap_records(&raw, 1, 0, ts, ts, 0)
    }

    /// The one message `validate` gives for a one-record batch with `headers`.
    fn refused(headers: NullableHeaders) -> String {
        match validate(&one(headers, NOW), NOW, MAX) {
            Err(ValidateError::BadRecords(bad)) => {
                assert_eq!(bad.len(), 1, "{bad:?}");
                assert_eq!(bad[0].index, 0);
                bad[0].to_string()
            }
            other => panic!("{headers:?} was not refused: {other:?}"),
        }
    }

    fn marker_batch() -> Bytes {
        let marker = TxnMarker {
            commit: true,
            coordinator_epoch: 3,
        };
        control_batch(7, 0, marker, 1_000).unwrap()
    }

    /// Records 0..5: plain tagged VIP, pending VIP, a copy tagged GOLD,
    /// pending untagged, plain with duplicate keys (BRONZE and VIP).
    fn mixed(codec: i16) -> Bytes {
        make_batch(
            &[
                record("r0", &[(b"weir.tag", b"VIP")], 1_000),
                record("r1", VIP_DELAYED, 2_000),
                record("r2", GOLD_COPY, 3_000),
                record("r3", DELAY_5S, 4_000),
                record("r4", DUPLICATES, 5_000),
            ],
            codec,
        )
    }

    /// The offset delta and raw bytes of each record of `batch`.
    fn records(batch: &[u8]) -> Vec<(i64, Vec<u8>)> {
        let parsed = ParsedBatch::parse(batch, BOUND).unwrap();
        (0..parsed.frames.len())
            .map(|i| {
                (
                    parsed.frames[i].offset_delta,
                    parsed.record(i).unwrap().to_vec(),
                )
            })
            .collect()
    }

    /// `Part`'s bytes, checked as a batch the log would take.
    fn part(filtered: Filtered) -> Vec<u8> {
        let Filtered::Part(b) = filtered else {
            panic!("not a part: {filtered:?}");
        };
        assert!(parse_replica_payload(&b).is_ok(), "framing and CRC");
        b
    }

    fn deltas(batch: &[u8]) -> Vec<i64> {
        records(batch).iter().map(|r| r.0).collect()
    }

    #[test]
    fn every_delivery_header_starts_with_the_prefix_the_pre_check_looks_for() {
        for name in [
            DELAY_MS_HEADER,
            DELIVER_AT_HEADER,
            DELAYED_FROM_HEADER,
            DELAY_CANCEL_HEADER,
        ] {
            assert!(name.as_bytes().starts_with(DELAY_KEY_PREFIX), "{name}");
        }
    }

    #[test]
    fn decimal_values_are_plain_digits_with_an_optional_minus() {
        for (given, want) in [
            ("0", Some(0)),
            ("-0", Some(0)),
            ("007", Some(7)),
            ("-12", Some(-12)),
            ("9223372036854775807", Some(i64::MAX)),
            ("-9223372036854775808", Some(i64::MIN)),
            ("9223372036854775808", None),
            ("-9223372036854775809", None),
            ("", None),
            ("-", None),
            ("+5", None),
            (" 5", None),
            ("5 ", None),
            ("1.5", None),
            ("0x10", None),
            ("--1", None),
            ("٣", None),
        ] {
            assert_eq!(parse_decimal(given.as_bytes()), want, "{given:?}");
        }
    }

    #[test]
    fn a_delay_header_that_is_not_a_decimal_number_is_refused_naming_it() {
        assert_eq!(
            refused(&[(b"weir.delay-ms", Some(b"abc"))]),
            r#"record 0: weir.delay-ms is not a decimal number of milliseconds: "abc""#
        );
        for value in ["+5", " 5", "5 ", "", "1.5", "99999999999999999999", "-"] {
            let message = refused(&[(b"weir.deliver-at-ms", Some(value.as_bytes()))]);
            assert_eq!(
                message,
                format!(
                    "record 0: weir.deliver-at-ms is not a decimal number of milliseconds: {value:?}"
                )
            );
        }
        assert_eq!(
            refused(&[(b"weir.delay-ms", None)]),
            "record 0: weir.delay-ms is null, not a decimal number of milliseconds"
        );
        let long = [b'x'; 100];
        let message = refused(&[(b"weir.delay-ms", Some(&long))]);
        let shown = format!("\"{}...\"", "x".repeat(VALUE_SHOWN_BYTES_MAX));
        assert!(message.ends_with(&shown), "{message}");
        let message = refused(&[(b"weir.delay-ms", Some(b"\xff1"))]);
        assert!(message.ends_with(": \"\u{fffd}1\""), "{message}");
    }

    #[test]
    fn a_negative_delay_or_time_is_refused() {
        assert_eq!(
            refused(&[(b"weir.delay-ms", Some(b"-5"))]),
            "record 0: weir.delay-ms is negative: -5"
        );
        assert_eq!(
            refused(&[(b"weir.deliver-at-ms", Some(b"-1"))]),
            "record 0: weir.deliver-at-ms is negative: -1"
        );
    }

    #[test]
    fn both_delay_headers_or_one_twice_are_refused() {
        assert_eq!(
            refused(&[
                (b"weir.deliver-at-ms", Some(b"10")),
                (b"weir.delay-ms", Some(b"10")),
            ]),
            "record 0: weir.delay-ms and weir.deliver-at-ms are both set"
        );
        for name in [DELAY_MS_HEADER, DELIVER_AT_HEADER] {
            let key = name.as_bytes();
            let twice: NullableHeaders = &[(key, Some(b"10")), (b"x", None), (key, Some(b"10"))];
            assert_eq!(refused(twice), format!("record 0: {name} is set twice"));
        }
    }

    #[test]
    fn a_producer_may_not_set_the_delayed_from_offset() {
        let want = "record 0: weir.delayed-from-offset is set by the broker on delivered copies, never by a producer";
        assert_eq!(refused(&[(b"weir.delayed-from-offset", Some(b"3"))]), want);
        let copy_like = [
            (DELAY_MS_HEADER.as_bytes(), Some(&b"10"[..])),
            (b"weir.delayed-from-offset", None),
        ];
        assert_eq!(refused(&copy_like), want);
    }

    #[test]
    fn a_record_due_past_the_delay_max_is_refused_and_one_in_the_past_is_not() {
        assert_eq!(
            refused(&[(b"weir.delay-ms", Some(b"3600001"))]),
            "record 0: weir.delay-ms makes it due at 3601001 ms, more than weir.delay.max.ms (3600000 ms) after now (1000 ms)"
        );
        assert_eq!(
            refused(&[(b"weir.deliver-at-ms", Some(b"3601001"))]),
            "record 0: weir.deliver-at-ms makes it due at 3601001 ms, more than weir.delay.max.ms (3600000 ms) after now (1000 ms)"
        );
        let saturated = one(&[(b"weir.delay-ms", Some(b"9223372036854775807"))], NOW);
        assert!(validate(&saturated, NOW, MAX).is_err());
        for headers in [
            &[(DELAY_MS_HEADER.as_bytes(), Some(&b"3600000"[..]))],
            &[(DELIVER_AT_HEADER.as_bytes(), Some(&b"3601000"[..]))],
            &[(DELIVER_AT_HEADER.as_bytes(), Some(&b"0"[..]))],
            &[(DELAY_MS_HEADER.as_bytes(), Some(&b"-0"[..]))],
        ] {
            assert_eq!(
                validate(&one(headers, NOW), NOW, MAX),
                Ok(true),
                "{headers:?}"
            );
        }
    }

    #[test]
    fn validation_says_whether_a_batch_holds_pending_records() {
        for codec in CODECS {
            let plain = make_batch(&[record("a", PLAIN, 1), record("b", DUPLICATES, 2)], codec);
            assert_eq!(validate(&plain, NOW, MAX), Ok(false), "codec {codec}");
            let pending = make_batch(&[record("a", PLAIN, 1), record("b", AT_9K, 2)], codec);
            assert_eq!(validate(&pending, NOW, MAX), Ok(true), "codec {codec}");
        }
        let mentions = make_batch(&[record("weir.delay-ms", PLAIN, 1)], 0);
        assert!(may_hold_delays(&mentions));
        assert_eq!(
            validate(&mentions, NOW, MAX),
            Ok(false),
            "a value is no header"
        );
        assert_eq!(validate(&marker_batch(), NOW, MAX), Ok(false));
    }

    #[test]
    fn every_bad_record_is_listed_by_its_index_up_to_the_limit() {
        let bad: Headers = &[(b"weir.delay-ms", b"soon")];
        let b = make_batch(
            &[
                record("a", DELAY_5S, 1),
                record("b", bad, 1),
                record("c", PLAIN, 1),
                record("d", GOLD_COPY, 1),
            ],
            3,
        );
        let Err(ValidateError::BadRecords(listed)) = validate(&b, NOW, MAX) else {
            panic!("not refused");
        };
        let indexes: Vec<usize> = listed.iter().map(|r| r.index).collect();
        assert_eq!(indexes, [1, 3]);
        let err = validate(&b, NOW, MAX).unwrap_err();
        assert!(
            err.to_string().starts_with(
                "2 records have refused delayed-delivery headers, the first record 1: "
            ),
            "{err}"
        );

        let many: Vec<Rec> = (0..DELAY_ERRORS_MAX + 5)
            .map(|_| record("v", bad, 1))
            .collect();
        let Err(ValidateError::BadRecords(listed)) = validate(&make_batch(&many, 0), NOW, MAX)
        else {
            panic!("not refused");
        };
        assert_eq!(listed.len(), DELAY_ERRORS_MAX);
    }

    #[test]
    fn an_unreadable_batch_fails_validation_as_unreadable() {
        let mut not_gzip = wrap_records(b"plain bytes", 1, 0, 0, 0, 0).to_vec();
        not_gzip[H::ATTRIBUTES_AT + 1] = 1;
        assert!(matches!(
            validate(&not_gzip, NOW, MAX),
            Err(ValidateError::Unreadable(BatchParseError::Decompress(_)))
        ));
        let b = one(&[(b"weir.delay-ms", Some(b"1"))], NOW);
        assert!(matches!(
            validate(&b[..b.len() - 1], NOW, MAX),
            Err(ValidateError::Unreadable(BatchParseError::Length { .. }))
        ));
    }

    #[test]
    fn a_delay_counts_from_the_record_timestamp_and_a_time_is_taken_as_is() {
        let b = make_batch(
            &[
                record("a", DELAY_5S, 1_000),
                record("b", PLAIN, 1_500),
                record("c", AT_9K, 2_000),
                record("d", &[(b"weir.delay-ms", b"9223372036854775807")], 3_000),
            ],
            2,
        );
        let scan = scan_delays(&b).unwrap();
        assert_eq!(
            scan.pending,
            [
                PendingRecord {
                    offset_delta: 0,
                    timestamp_ms: 1_000,
                    due_ms: 6_000
                },
                PendingRecord {
                    offset_delta: 2,
                    timestamp_ms: 2_000,
                    due_ms: 9_000
                },
                PendingRecord {
                    offset_delta: 3,
                    timestamp_ms: 3_000,
                    due_ms: i64::MAX
                },
            ]
        );
        assert!(scan.copies.is_empty());
    }

    #[test]
    fn under_log_append_time_a_delay_counts_from_the_append_time() {
        let mut b = make_batch(
            &[record("a", DELAY_5S, 1_000), record("b", AT_9K, 2_000)],
            0,
        )
        .to_vec();
        stamp_log_append_time(&mut b, 50_000);
        let scan = scan_delays(&b).unwrap();
        let due: Vec<(i64, i64)> = scan
            .pending
            .iter()
            .map(|p| (p.timestamp_ms, p.due_ms))
            .collect();
        assert_eq!(due, [(50_000, 55_000), (50_000, 9_000)]);
        assert!(validate(&b, 50_000, bound(5_000)).is_ok());
        assert!(
            validate(&b, 49_999, bound(5_000)).is_err(),
            "due 5001 ms after now"
        );
        // The message names the config that set the bound.
        let retention = DelayBound {
            max_ms: 5_000,
            config: "retention.ms",
        };
        let Err(ValidateError::BadRecords(bad)) = validate(&b, 49_999, retention) else {
            panic!("due 5001 ms after now");
        };
        assert!(
            bad[0].message.contains("more than retention.ms (5000 ms)"),
            "{bad:?}"
        );
    }

    #[test]
    fn a_producer_may_not_set_the_cancel_header() {
        let want = "record 0: weir.delay-cancel is set by the broker on the markers of \
                    `weir delayed cancel`, never by a producer";
        assert_eq!(refused(&[(b"weir.delay-cancel", Some(b"3"))]), want);
        assert_eq!(
            refused(&[
                (b"weir.delay-ms", Some(b"10")),
                (b"weir.delay-cancel", None)
            ]),
            want
        );
    }

    #[test]
    fn a_cancel_batch_is_scanned_marked_and_hidden_from_fetches() {
        let mut b = cancel_batch(&[3, 12], 5_000).unwrap();
        assert!(parse_replica_payload(&b).is_ok(), "framing and CRC");
        patch_offsets(&mut b, 40, 0);
        let scan = scan_delays(&b).unwrap();
        assert_eq!(
            scan.cancels,
            [
                DelayCancel {
                    offset_delta: 0,
                    cancelled: 3
                },
                DelayCancel {
                    offset_delta: 1,
                    cancelled: 12
                }
            ]
        );
        assert!(scan.pending.is_empty() && scan.copies.is_empty());
        assert!(delay_mark(&b));
        // Only markers: nothing is served, not even an empty record set.
        assert_eq!(filter_pending(&b, None), Ok(Filtered::Skip));
        // The records are a null key and value and the one header.
        let decoded = RecordBatchDecoder::decode(&mut Bytes::from(b)).unwrap();
        let record = &decoded.records[1];
        assert_eq!((record.offset, record.timestamp), (41, 5_000));
        assert!(record.key.is_none() && record.value.is_none());
        let headers: Vec<_> = record.headers.iter().collect();
        assert_eq!(headers.len(), 1);
        assert_eq!(headers[0].0.as_str(), DELAY_CANCEL_HEADER);
        assert_eq!(headers[0].1.as_deref(), Some(&b"12"[..]));
        assert_eq!(cancel_batch(&[], 1), Err(DelayError::NoOriginals));
    }

    #[test]
    fn a_cancel_marker_beside_other_records_is_left_out_of_fetches() {
        let cancel: Headers = &[(b"weir.delay-cancel", b"0")];
        let bad: Headers = &[(b"weir.delay-cancel", b"x")];
        for codec in CODECS {
            let b = make_batch(
                &[
                    record("a", PLAIN, 100),
                    record("b", cancel, 200),
                    record("c", DELAY_5S, 300),
                ],
                codec,
            );
            assert_eq!(deltas(&part(filter_pending(&b, None).unwrap())), [0]);
            let scan = scan_delays(&b).unwrap();
            assert_eq!(scan.cancels.len(), 1, "codec {codec}");
            assert_eq!(scan.pending.len(), 1, "codec {codec}");
        }
        let broken = make_batch(&[record("a", bad, 100)], 0);
        assert!(matches!(
            scan_delays(&broken),
            Err(DelayError::BadCancel {
                offset_delta: 0,
                ..
            })
        ));
    }

    #[test]
    fn a_pending_record_is_shown_with_its_due_time_and_cut_fields() {
        let b = make_batch(
            &[
                record("plain", PLAIN, 100),
                record("a-long-value", DELAY_5S, 200),
            ],
            3,
        );
        let shown = pending_record(&b, 1, 4).unwrap();
        assert_eq!(shown.timestamp_ms, 200);
        assert_eq!(shown.due_ms, 5_200);
        assert_eq!(shown.key.as_deref(), Some(&b"k"[..]));
        assert_eq!(shown.value.as_deref(), Some(&b"a-lo"[..]));
        assert_eq!(shown.value_len, 12);
        assert_eq!(
            shown.headers,
            [(b"weir".to_vec(), Some(b"5000".to_vec()))],
            "keys and values are cut alike"
        );
        assert_eq!(
            pending_record(&b, 0, 4),
            Err(DelayError::NotPending { offset: 0 })
        );
        assert_eq!(
            pending_record(&b, 7, 4),
            Err(DelayError::OffsetNotFound { offset: 7 })
        );
    }

    #[test]
    fn a_scan_finds_copies_and_pending_records_and_skips_malformed_delays() {
        let soon: Headers = &[(b"weir.delay-ms", b"soon")];
        let b = make_batch(
            &[
                record("a", GOLD_COPY, 100),
                record("b", soon, 200),
                record("c", VIP_DELAYED, 300),
                record("d", &[(b"weir.delayed-from-offset", b"0")], 400),
            ],
            4,
        );
        let scan = scan_delays(&b).unwrap();
        assert_eq!(
            scan.copies,
            [
                DelayedCopy {
                    offset_delta: 0,
                    delayed_from: 3
                },
                DelayedCopy {
                    offset_delta: 3,
                    delayed_from: 0
                }
            ]
        );
        assert_eq!(
            scan.pending,
            [PendingRecord {
                offset_delta: 2,
                timestamp_ms: 300,
                due_ms: 310
            }]
        );
        assert!(!scan.is_empty());
        assert_eq!(scan_delays(&marker_batch()), Ok(DelayScan::default()));
        assert_eq!(scan_delays(b"short"), Ok(DelayScan::default()));
    }

    #[test]
    fn a_copy_whose_delayed_from_offset_is_malformed_is_an_error() {
        let key = DELAYED_FROM_HEADER.as_bytes();
        for (headers, problem) in [
            (
                vec![(key, Some(&b"x"[..]))],
                r#"weir.delayed-from-offset is not a decimal offset: "x""#,
            ),
            (
                vec![(key, None)],
                "weir.delayed-from-offset is null, not a decimal offset",
            ),
            (
                vec![(key, Some(b"-3"))],
                "weir.delayed-from-offset is negative: -3",
            ),
            (
                vec![(key, Some(b"3")), (key, Some(b"3"))],
                "weir.delayed-from-offset is set twice",
            ),
        ] {
            let b = one(&headers, 0);
            assert_eq!(
                scan_delays(&b),
                Err(DelayError::BadDelayedFrom {
                    offset_delta: 0,
                    problem: problem.to_owned()
                })
            );
            assert!(delay_mark(&b), "marked, for its reader to decide");
        }
    }

    #[test]
    fn the_pre_check_and_the_mark_see_pending_records_and_copies_only() {
        let plain = make_batch(&[record("a", PLAIN, 1), record("b", DUPLICATES, 2)], 0);
        assert!(!may_hold_delays(&plain));
        assert!(!delay_mark(&plain));
        let mentions = make_batch(&[record("weir.deliver", PLAIN, 1)], 0);
        assert!(may_hold_delays(&mentions), "the bytes are there");
        assert!(!delay_mark(&mentions), "but in a value");
        let malformed = make_batch(&[record("a", &[(b"weir.delay-ms", b"soon")], 1)], 0);
        assert!(may_hold_delays(&malformed));
        assert!(
            !delay_mark(&malformed),
            "a malformed stored delay is not pending"
        );
        for codec in CODECS {
            let compressed = codec != 0;
            let plain = make_batch(&[record("a", PLAIN, 1)], codec);
            assert_eq!(may_hold_delays(&plain), compressed, "codec {codec}");
            assert!(!delay_mark(&plain), "codec {codec}");
            for headers in [DELAY_5S, AT_9K, GOLD_COPY] {
                let b = make_batch(&[record("a", PLAIN, 1), record("b", headers, 2)], codec);
                assert!(may_hold_delays(&b), "codec {codec}");
                assert!(delay_mark(&b), "codec {codec}");
            }
        }
        assert!(!may_hold_delays(&marker_batch()));
        assert!(!delay_mark(&marker_batch()));
        assert!(!may_hold_delays(b"short"));
        assert!(!delay_mark(b""));
    }

    #[test]
    fn a_compressed_batch_that_cannot_be_read_is_marked() {
        let mut not_gzip = wrap_records(b"weir.delay-ms", 1, 0, 0, 0, 0).to_vec();
        not_gzip[H::ATTRIBUTES_AT + 1] = 1;
        assert!(may_hold_delays(&not_gzip));
        assert!(delay_mark(&not_gzip));
    }

    #[test]
    fn fetches_leave_out_pending_records_in_every_codec() {
        for codec in CODECS {
            let b = mixed(codec);
            let all = part(filter_pending(&b, None).unwrap());
            assert_eq!(deltas(&all), [0, 2, 4], "codec {codec}");
            let original = records(&b);
            assert_eq!(
                records(&all),
                [
                    original[0].clone(),
                    original[2].clone(),
                    original[4].clone()
                ],
                "codec {codec}: raw bytes kept, duplicate keys and all"
            );
            let h = H::parse(&all).unwrap();
            assert_eq!(
                (h.record_count, h.last_offset_delta, h.codec()),
                (3, 4, codec)
            );
            let star = TagExpr::parse("*").unwrap();
            assert_eq!(filter_pending(&b, Some(&star)), Ok(Filtered::Part(all)));
        }
    }

    #[test]
    fn a_view_sees_its_matching_records_less_pending_ones() {
        let expr = |s: &str| TagExpr::parse(s).unwrap();
        for codec in CODECS {
            let b = mixed(codec);
            let vip = part(filter_pending(&b, Some(&expr("VIP"))).unwrap());
            assert_eq!(deltas(&vip), [0, 4], "codec {codec}: pending VIP left out");
            assert_eq!(records(&vip)[1], records(&b)[4]);
            let gold = part(filter_pending(&b, Some(&expr("GOLD"))).unwrap());
            assert_eq!(deltas(&gold), [2], "codec {codec}: a copy is delivered");
            assert_eq!(
                filter_pending(&b, Some(&expr("SILVER"))),
                Ok(Filtered::Skip),
                "codec {codec}"
            );
        }
    }

    #[test]
    fn a_batch_without_pending_records_passes_whole_and_one_of_only_pending_is_skipped() {
        for codec in CODECS {
            let none_pending =
                make_batch(&[record("a", GOLD_COPY, 1), record("b", PLAIN, 2)], codec);
            assert_eq!(filter_pending(&none_pending, None), Ok(Filtered::Whole));
            let gold = TagExpr::parse("GOLD").unwrap();
            let filtered = filter_pending(&none_pending, Some(&gold)).unwrap();
            assert_eq!(deltas(&part(filtered)), [0]);
            let only_pending =
                make_batch(&[record("a", DELAY_5S, 1), record("b", AT_9K, 2)], codec);
            assert_eq!(filter_pending(&only_pending, None), Ok(Filtered::Skip));
        }
        assert_eq!(filter_pending(&marker_batch(), None), Ok(Filtered::Whole));
        let vip = TagExpr::parse("VIP").unwrap();
        assert_eq!(
            filter_pending(&marker_batch(), Some(&vip)),
            Ok(Filtered::Whole)
        );
        let unmarked = make_batch(&[record("a", DUPLICATES, 1), record("b", PLAIN, 2)], 0);
        assert_eq!(
            deltas(&part(filter_pending(&unmarked, Some(&vip)).unwrap())),
            [0]
        );
    }

    /// The headers of `frame` of `records` as (key, value) bytes.
    fn headers_of(records: &[u8], frame: &RecordFrame) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
        record_headers(records, frame)
            .map(|h| {
                let h = h.unwrap();
                (
                    records[h.key].to_vec(),
                    h.value.map(|v| records[v].to_vec()),
                )
            })
            .collect()
    }

    /// Key, value and headers of `frame` of `records`.
    type Content = (
        Option<Vec<u8>>,
        Option<Vec<u8>>,
        Vec<(Vec<u8>, Option<Vec<u8>>)>,
    );

    fn content(records: &[u8], frame: &RecordFrame) -> Content {
        let bytes = |r: &Option<Range<usize>>| r.clone().map(|r| records[r].to_vec());
        (
            bytes(&frame.key),
            bytes(&frame.value),
            headers_of(records, frame),
        )
    }

    /// A stored batch at base offset 100: plain, pending with duplicate
    /// keys and a null key, pending with a delay.
    fn originals(codec: i16) -> Vec<u8> {
        let raw = [
            encode_record_parts(0, 0, Some(b"k0"), Some(b"v0"), &[(b"x", Some(b"1"))]),
            encode_record_parts(1, 100, None, Some(b"v1"), PENDING_DUPLICATES),
            encode_record_parts(
                2,
                200,
                Some(b"k2"),
                None,
                &[(b"weir.delay-ms", Some(b"50"))],
            ),
        ]
        .concat();
        let mut b = wrap_records(&raw, 3, 2, 1_000, 1_200, codec).to_vec();
        patch_offsets(&mut b, 100, 4);
        b
    }

    #[test]
    fn a_copy_batch_carries_each_originals_bytes_and_two_headers() {
        for codec in CODECS {
            let a = originals(codec);
            let mut appended = make_batch(&[record("z", DELAY_5S, 1)], codec).to_vec();
            patch_offsets(&mut appended, 500, 4);
            stamp_log_append_time(&mut appended, 60_000);
            let wanted: [(&[u8], i64); 3] = [(&a, 101), (&appended, 500), (&a, 102)];
            let out = copy_batch(&wanted, 77_000).unwrap();

            let h = H::parse(&out).unwrap();
            assert_eq!(h.batch_bytes(), Some(out.len()));
            assert_eq!(h.crc, crc32c::crc32c(&out[H::ATTRIBUTES_AT..]));
            assert!(parse_replica_payload(&out).is_ok(), "the log would take it");
            assert_eq!(
                (h.base_offset, h.partition_leader_epoch, h.magic),
                (0, -1, 2)
            );
            assert_eq!(
                (h.attributes, h.record_count, h.last_offset_delta),
                (0, 3, 2)
            );
            assert_eq!((h.base_timestamp, h.max_timestamp), (77_000, 77_000));
            assert_eq!(
                (h.producer_id, h.producer_epoch, h.base_sequence),
                (-1, -1, -1)
            );
            let decoded = RecordBatchDecoder::decode(&mut Bytes::from(out.clone())).unwrap();
            assert_eq!(decoded.records.len(), 3, "codec {codec}");

            let copies = ParsedBatch::parse(&out, BOUND).unwrap();
            let from = [
                (ParsedBatch::parse(&a, BOUND).unwrap(), 1, 101, 1_100),
                (
                    ParsedBatch::parse(&appended, BOUND).unwrap(),
                    0,
                    500,
                    60_000,
                ),
                (ParsedBatch::parse(&a, BOUND).unwrap(), 2, 102, 1_200),
            ];
            for (i, (original, at, offset, ts)) in from.iter().enumerate() {
                let frame = &copies.frames[i];
                assert_eq!((frame.offset_delta, frame.timestamp_delta), (i as i64, 0));
                assert_eq!(copies.timestamp(frame), 77_000);
                let (_, length_bytes) = read_varint(&copies.records[frame.bytes.clone()]).unwrap();
                let attributes = copies.records[frame.bytes.start + length_bytes];
                assert_eq!(attributes, 0, "codec {codec}, copy {i}");
                let (key, value, mut headers) = content(&original.records, &original.frames[*at]);
                headers.push((DELAYED_FROM.to_vec(), Some(offset.to_string().into_bytes())));
                headers.push((
                    PRODUCE_TIME_HEADER.as_bytes().to_vec(),
                    Some(ts.to_string().into_bytes()),
                ));
                assert_eq!(
                    content(&copies.records, frame),
                    (key, value, headers),
                    "codec {codec}, copy {i}"
                );
            }

            let scan = scan_delays(&out).unwrap();
            assert!(scan.pending.is_empty(), "a copy is never pending");
            let from: Vec<(i32, i64)> = scan
                .copies
                .iter()
                .map(|c| (c.offset_delta, c.delayed_from))
                .collect();
            assert_eq!(from, [(0, 101), (1, 500), (2, 102)]);
            assert!(delay_mark(&out));
            assert_eq!(filter_pending(&out, None), Ok(Filtered::Whole));
        }
    }

    #[test]
    fn each_original_gets_its_own_result_and_copies_split_into_batches_as_framed() {
        for codec in CODECS {
            let a = originals(codec);
            let mut other = make_batch(&[record("z", DELAY_5S, 1)], codec).to_vec();
            patch_offsets(&mut other, 500, 4);
            let results = copy_records(&[(&a, 102), (&other, 500), (&a, 100), (&a, 101)]);
            assert_eq!(results[2], Err(DelayError::NotPending { offset: 100 }));
            let copies: Vec<CopyRecord> = results.into_iter().filter_map(Result::ok).collect();
            assert_eq!(
                copies.iter().map(CopyRecord::original).collect::<Vec<_>>(),
                [102, 500, 101],
                "codec {codec}: the others are copied, in the order given"
            );
            let whole = copies_batch(&copies, 9).unwrap();
            let framed: usize = copies.iter().map(CopyRecord::framed_bytes_max).sum();
            assert!(whole.len() <= H::BYTES + framed);
            // Split, each part is the whole's records from offset delta 0.
            let (first, rest) = copies.split_at(1);
            let parts = [
                copies_batch(first, 9).unwrap(),
                copies_batch(rest, 9).unwrap(),
            ];
            let records = |b: &[u8]| {
                let parsed = ParsedBatch::parse(b, BOUND).unwrap();
                parsed
                    .frames
                    .iter()
                    .map(|f| content(&parsed.records, f))
                    .collect::<Vec<_>>()
            };
            assert_eq!(
                [records(&parts[0]), records(&parts[1])].concat(),
                records(&whole)
            );
            assert_eq!(
                ParsedBatch::parse(&parts[1], BOUND).unwrap().frames[1].offset_delta,
                1
            );
        }
        assert_eq!(copies_batch(&[], 5), Err(DelayError::NoOriginals));
    }

    #[test]
    fn only_pending_originals_at_their_offsets_are_copied() {
        let a = originals(3);
        let copy = copy_batch(&[(&a, 102)], 5).unwrap();
        for (offset, err) in [
            (99, DelayError::OffsetNotFound { offset: 99 }),
            (103, DelayError::OffsetNotFound { offset: 103 }),
            (100, DelayError::NotPending { offset: 100 }),
        ] {
            assert_eq!(copy_batch(&[(&a, 101), (&a, offset)], 5), Err(err));
        }
        assert_eq!(
            copy_batch(&[(&copy, 0)], 5),
            Err(DelayError::NotPending { offset: 0 }),
            "a copy is not copied again"
        );
        assert_eq!(
            copy_batch(&[(&marker_batch(), 0)], 5),
            Err(DelayError::NotPending { offset: 0 })
        );
        assert_eq!(copy_batch(&[], 5), Err(DelayError::NoOriginals));
        assert!(matches!(
            copy_batch(&[(&a[..a.len() - 1], 101)], 5),
            Err(DelayError::Unreadable(_))
        ));
    }

    #[test]
    fn malformed_batches_never_panic() {
        let vip = TagExpr::parse("VIP").unwrap();
        let exercise = |b: &[u8]| {
            may_hold_delays(b);
            delay_mark(b);
            let _ = scan_delays(b);
            let _ = validate(b, NOW, MAX);
            let _ = filter_pending(b, None);
            let _ = filter_pending(b, Some(&vip));
            let _ = copy_batch(&[(b, 1), (b, 2)], NOW);
        };
        for codec in [0, 3] {
            let b = mixed(codec);
            for cut in 0..b.len() {
                exercise(&b[..cut]);
                if may_hold_delays(&b[..cut]) {
                    assert!(scan_delays(&b[..cut]).is_err(), "{cut}");
                    assert!(delay_mark(&b[..cut]), "{cut}");
                }
            }
            for at in 0..b.len() {
                let mut flipped = b.to_vec();
                flipped[at] ^= 0xff;
                exercise(&flipped);
            }
        }
    }
}
