//! Byte layouts of every file the storage engine writes: segment file header,
//! commit-log entry header, index file header and entry, checkpoint file.
//!
//! `docs/format.md` draws the same layouts; keep the two in step. All integers
//! are big-endian, as in Kafka's own formats.
//!
//! Compatibility rule (docs/format.md, "Versions"): every file names its
//! format version, and a reader accepts exactly the versions it lists below.
//! A version it does not list, or a checksummed entry of a kind its segment
//! version does not allow, is reported as [`FormatError::Unsupported`] and
//! recovery refuses to open, changing nothing: only a damaged (torn or
//! checksum-failing) tail is ever cut. A change a reader of the previous
//! version would misread (a new entry kind, a new field) bumps the version.

use uuid::Uuid;

use crate::PartitionId;

/// Magic at the start of every segment file.
pub(crate) const SEGMENT_MAGIC: [u8; 8] = *b"WEIRSEG\0";
/// Version of the segment file layout that this build writes. Version 2 is
/// laid out as version 1; it was bumped because compaction's kind-3 entries
/// had been added to version 1 without a bump, so binaries that predate
/// compaction took them for a torn tail (see [`EntryKind::in_segment`]).
///
/// Version 3 adds the truncation entry (kind 4).
pub(crate) const SEGMENT_VERSION: u32 = 3;
/// Every segment version this build reads (the one it writes, and older ones).
pub(crate) const SEGMENT_VERSIONS_READ: [u32; 3] = [1, 2, 3];
/// Bytes of the segment file header; entries follow it.
pub(crate) const SEGMENT_HEADER_BYTES: u64 = 16;

/// Bytes of the header in front of every commit-log entry.
pub(crate) const ENTRY_HEADER_BYTES: usize = 40;
/// Bytes at the start of an entry that the entry CRC does not cover (length and CRC).
pub(crate) const ENTRY_PREFIX_BYTES: usize = 8;
/// The largest batch an entry may carry; a longer length read from disk is corruption.
pub(crate) const ENTRY_BATCH_BYTES_MAX: usize = 128 << 20;

/// Magic at the start of every index file.
pub(crate) const INDEX_MAGIC: [u8; 8] = *b"WEIRIDX\0";
/// Version of the index file layout this build writes. Version 2 adds each
/// entry's running maximum timestamp (bytes 48..56), so a time look-up can
/// binary-search the file instead of memory.
///
/// Version 3 is laid out as version 2. It was bumped because bit 14 of an
/// entry's attributes ([`DELAY_MARK`]) had been given its meaning in version
/// 2 without a bump: a build that predates it would serve pending delayed
/// records at once. Such a build knows only versions 1 and 2, so it refuses
/// a version-3 file.
pub(crate) const INDEX_VERSION: u32 = 3;
/// Every index version this build reads. A version-1 file is rewritten as
/// the current version when the log opens, and a version-2 file has its
/// header's version raised in place (see `recovery.rs`).
pub(crate) const INDEX_VERSIONS_READ: [u32; 3] = [1, 2, 3];
/// Bytes of the index file header.
pub(crate) const INDEX_HEADER_BYTES: u64 = 64;
/// Bytes of one index entry.
pub(crate) const INDEX_ENTRY_BYTES: usize = 64;

/// Magic at the start of the checkpoint file.
pub(crate) const CHECKPOINT_MAGIC: [u8; 8] = *b"WEIRCKP\0";
/// Version of the checkpoint layout this build writes. Version 2 adds each
/// partition's live bytes and segment use, so an open need not read whole
/// index files.
pub(crate) const CHECKPOINT_VERSION: u32 = 2;
/// Every checkpoint version this build reads.
pub(crate) const CHECKPOINT_VERSIONS_READ: [u32; 2] = [1, 2];
/// Bytes of the checkpoint header (magic, version, partition count, position).
const CHECKPOINT_HEADER_BYTES: usize = 24;
/// Bytes of one partition record in a version-1 checkpoint.
const CHECKPOINT_PARTITION_BYTES: usize = 40;
/// Bytes of the fixed part of a partition record in a version-2 checkpoint
/// (the version-1 record, live bytes, segment-use count and zero).
const CHECKPOINT_V2_PARTITION_BYTES: usize = 56;
/// Bytes of one segment use in a version-2 checkpoint.
const CHECKPOINT_SEGMENT_USE_BYTES: usize = 24;
/// The largest checkpoint file read back; a longer one is corruption.
pub(crate) const CHECKPOINT_BYTES_MAX: u64 = 256 << 20;

/// Why a file header, entry or checkpoint was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FormatError {
    /// Damaged: short, bad magic, bad checksum, inconsistent lengths.
    Corrupt(String),
    /// Well formed, but of a version or entry kind this build does not know.
    Unsupported(String),
}

/// What a commit-log entry holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EntryKind {
    /// A batch appended by a producer: adds offsets to its partition.
    Batch = 1,
    /// A copy of an existing batch moved by the cleaner: adds no offsets, only
    /// moves the index entry of the batch with the same base offset.
    Relocated = 2,
    /// A compacted rewrite of an existing batch: same base offset and offset
    /// range, fewer records. Recovery never applies it from the log; the
    /// partition's index file (replaced atomically) is what points at it.
    Compacted = 3,
    /// A partition was truncated: every batch at or past the entry's base
    /// offset, earlier in the log, is gone. Carries no batch. Recovery
    /// applies it to the partition's index in log order, so a batch a
    /// truncation removed is never brought back.
    Truncation = 4,
}

impl EntryKind {
    /// The kind that `byte` names in a segment of `segment_version`; `None`
    /// when that version does not allow it.
    ///
    /// Version 1 allows kinds 1, 2 and 3: kind 3 (compaction) was first
    /// written into version-1 segments, so a version-1 segment written by a
    /// build with compaction holds it. Version 2 allows the same three kinds.
    /// Version 3 adds kind 4 (truncation).
    /// A new kind needs a new segment version that allows it, and the writer
    /// only writes it into segments of that version.
    pub(crate) fn in_segment(segment_version: u32, byte: u8) -> Option<Self> {
        match (segment_version, byte) {
            (1..=3, 1) => Some(Self::Batch),
            (1..=3, 2) => Some(Self::Relocated),
            (1..=3, 3) => Some(Self::Compacted),
            (3, 4) => Some(Self::Truncation),
            _ => None,
        }
    }
}

/// The decoded header of a commit-log entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EntryHeader {
    /// Bytes after the length and CRC fields (the rest of the header plus the batch).
    pub body_len: u32,
    /// CRC32C over the body.
    pub crc: u32,
    pub kind: EntryKind,
    pub partition: PartitionId,
    /// Base offset of the batch the entry carries.
    pub base_offset: i64,
}

impl EntryHeader {
    /// Bytes of the batch after the header.
    pub fn batch_len(&self) -> usize {
        (self.body_len as usize).saturating_sub(ENTRY_HEADER_BYTES - ENTRY_PREFIX_BYTES)
    }
}

/// Append an entry (header then `batch`) to `out`, computing its CRC.
pub(crate) fn put_entry(
    out: &mut Vec<u8>,
    kind: EntryKind,
    partition: PartitionId,
    base_offset: i64,
    batch: &[u8],
) {
    let start = out.len();
    put_entry_header(out, kind, partition, base_offset, batch.len());
    out.extend_from_slice(batch);
    let crc = crc32c::crc32c(out.get(start + ENTRY_PREFIX_BYTES..).unwrap_or_default());
    if let Some(slot) = out.get_mut(start + 4..start + 8) {
        slot.copy_from_slice(&crc.to_be_bytes());
    }
}

/// Append an entry for a batch, copying it only once: `patch` changes the
/// copy in place (base offset and leader epoch; or a restamp that rewrites
/// the batch CRC) before the entry CRC is computed over it.
///
/// Deriving the entry CRC from the batch CRC with `crc32c_combine` was tried
/// and measured slower: the combine costs more than a hardware CRC pass over
/// a batch that is still in cache (docs/benchmarks.md).
pub(crate) fn put_patched_entry(
    out: &mut Vec<u8>,
    kind: EntryKind,
    partition: PartitionId,
    base_offset: i64,
    batch: &[u8],
    patch: impl FnOnce(&mut [u8]),
) {
    let start = out.len();
    out.reserve(ENTRY_HEADER_BYTES + batch.len());
    put_entry_header(out, kind, partition, base_offset, batch.len());
    let batch_at = out.len();
    out.extend_from_slice(batch);
    if let Some(stored) = out.get_mut(batch_at..) {
        patch(stored);
    }
    let crc = crc32c::crc32c(out.get(start + ENTRY_PREFIX_BYTES..).unwrap_or_default());
    if let Some(slot) = out.get_mut(start + 4..start + 8) {
        slot.copy_from_slice(&crc.to_be_bytes());
    }
}

/// The header of an entry carrying `batch_len` bytes, with a zero CRC.
fn put_entry_header(
    out: &mut Vec<u8>,
    kind: EntryKind,
    partition: PartitionId,
    base_offset: i64,
    batch_len: usize,
) {
    let body_len = (ENTRY_HEADER_BYTES - ENTRY_PREFIX_BYTES + batch_len) as u32;
    out.extend_from_slice(&body_len.to_be_bytes());
    out.extend_from_slice(&[0; 4]);
    out.push(kind as u8);
    out.extend_from_slice(&[0; 3]);
    out.extend_from_slice(partition.topic_id.as_bytes());
    out.extend_from_slice(&partition.partition.to_be_bytes());
    out.extend_from_slice(&base_offset.to_be_bytes());
}

/// Decode the length and CRC prefix of an entry.
pub(crate) fn entry_prefix(bytes: &[u8]) -> Option<(u32, u32)> {
    Some((be_u32(bytes, 0)?, be_u32(bytes, 4)?))
}

/// Decode an entry header from the first [`ENTRY_HEADER_BYTES`] of `bytes`,
/// an entry of a segment this build writes. `None` when the bytes are short
/// or the kind is unknown.
pub(crate) fn decode_entry_header(bytes: &[u8]) -> Option<EntryHeader> {
    decode_entry_header_in(bytes, SEGMENT_VERSION)
}

/// [`decode_entry_header`] for an entry of a segment of `segment_version`.
pub(crate) fn decode_entry_header_in(bytes: &[u8], segment_version: u32) -> Option<EntryHeader> {
    let (body_len, crc) = entry_prefix(bytes)?;
    let kind = EntryKind::in_segment(segment_version, *bytes.get(8)?)?;
    let topic = Uuid::from_slice(bytes.get(12..28)?).ok()?;
    Some(EntryHeader {
        body_len,
        crc,
        kind,
        partition: PartitionId {
            topic_id: topic,
            partition: be_i32(bytes, 28)?,
        },
        base_offset: be_i64(bytes, 32)?,
    })
}

/// The segment file header.
pub(crate) fn segment_header() -> [u8; SEGMENT_HEADER_BYTES as usize] {
    let mut h = [0u8; SEGMENT_HEADER_BYTES as usize];
    h[..8].copy_from_slice(&SEGMENT_MAGIC);
    h[8..12].copy_from_slice(&SEGMENT_VERSION.to_be_bytes());
    h
}

/// The version of a segment header this build reads.
pub(crate) fn check_segment_header(bytes: &[u8]) -> Result<u32, FormatError> {
    if bytes.get(..8) != Some(&SEGMENT_MAGIC[..]) {
        return Err(FormatError::Corrupt("bad segment magic".into()));
    }
    let version = be_u32(bytes, 8).ok_or(FormatError::Corrupt("short segment header".into()))?;
    if !SEGMENT_VERSIONS_READ.contains(&version) {
        return Err(FormatError::Unsupported(format!(
            "segment format version {version}; this build reads versions {SEGMENT_VERSIONS_READ:?}"
        )));
    }
    Ok(version)
}

/// One batch as the per-partition queue index records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IndexEntry {
    pub base_offset: i64,
    pub last_offset_delta: i32,
    /// Bytes of the stored batch (without the entry header).
    pub size: u32,
    /// Global commit-log position of the entry header.
    pub position: u64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub attributes: i16,
    pub base_sequence: i32,
    /// The largest `max_timestamp` of this and every earlier entry of the
    /// index file, so a time look-up can binary-search the file even when
    /// timestamps go backwards.
    pub running_max_ts: i64,
    /// The batch's tag summary (`crate::tags::tag_summary`), or
    /// [`TAG_SUMMARY_UNKNOWN`], which may match any tag. Stored inverted in
    /// bytes 56..60, so the zeros that builds before it wrote there read as
    /// unknown: the field needs no new index version either way.
    pub tag_summary: u32,
}

/// Bit 14 of an index entry's `attributes` (a bit Kafka's batch attributes
/// leave unused; the batch itself is never changed): the batch holds
/// delayed-delivery records, pending originals or delivered copies
/// (`crate::delay`). Reads of such a batch hide its pending records; the
/// broker's delay mover feeds on exactly these batches. Builds before it
/// wrote 0 here, and no batch of theirs holds such records.
pub(crate) const DELAY_MARK: i16 = 0x4000;

/// The tag summary of a batch nobody summarized: every bit set, so every
/// tag filter must read the batch.
pub(crate) const TAG_SUMMARY_UNKNOWN: u32 = u32::MAX;

impl IndexEntry {
    /// Offset of the batch's last record.
    pub fn last_offset(&self) -> i64 {
        self.base_offset + i64::from(self.last_offset_delta)
    }

    /// Global commit-log position just past the entry. Saturating: a
    /// position read from a damaged index cannot overflow it, and the read
    /// of such an entry then fails (see `Segment::file_offset`).
    pub fn end_position(&self) -> u64 {
        self.position
            .saturating_add(ENTRY_HEADER_BYTES as u64 + u64::from(self.size))
    }

    pub fn encode(&self) -> [u8; INDEX_ENTRY_BYTES] {
        let mut b = [0u8; INDEX_ENTRY_BYTES];
        b[0..8].copy_from_slice(&self.base_offset.to_be_bytes());
        b[8..12].copy_from_slice(&self.last_offset_delta.to_be_bytes());
        b[12..16].copy_from_slice(&self.size.to_be_bytes());
        b[16..24].copy_from_slice(&self.position.to_be_bytes());
        b[24..32].copy_from_slice(&self.max_timestamp.to_be_bytes());
        b[32..40].copy_from_slice(&self.producer_id.to_be_bytes());
        b[40..42].copy_from_slice(&self.producer_epoch.to_be_bytes());
        b[42..44].copy_from_slice(&self.attributes.to_be_bytes());
        b[44..48].copy_from_slice(&self.base_sequence.to_be_bytes());
        b[48..56].copy_from_slice(&self.running_max_ts.to_be_bytes());
        b[56..60].copy_from_slice(&(!self.tag_summary).to_be_bytes());
        let crc = crc32c::crc32c(&b[..60]);
        b[60..64].copy_from_slice(&crc.to_be_bytes());
        b
    }

    /// `None` when the bytes are short or their CRC does not match.
    pub fn decode(b: &[u8]) -> Option<Self> {
        Self::decode_in(b, INDEX_VERSION)
    }

    /// [`Self::decode`] for an index file of `version`; a version-1 entry has
    /// no running maximum (`i64::MIN`: the caller computes it).
    pub fn decode_in(b: &[u8], version: u32) -> Option<Self> {
        let body = b.get(..60)?;
        if crc32c::crc32c(body) != be_u32(b, 60)? {
            return None;
        }
        Some(Self {
            base_offset: be_i64(b, 0)?,
            last_offset_delta: be_i32(b, 8)?,
            size: be_u32(b, 12)?,
            position: be_u64(b, 16)?,
            max_timestamp: be_i64(b, 24)?,
            producer_id: be_i64(b, 32)?,
            producer_epoch: be_i16(b, 40)?,
            attributes: be_i16(b, 42)?,
            base_sequence: be_i32(b, 44)?,
            running_max_ts: if version == 1 {
                i64::MIN
            } else {
                be_i64(b, 48)?
            },
            tag_summary: !be_u32(b, 56)?,
        })
    }
}

/// The index file header for `id`.
pub(crate) fn index_header(id: PartitionId) -> [u8; INDEX_HEADER_BYTES as usize] {
    let mut h = [0u8; INDEX_HEADER_BYTES as usize];
    h[..8].copy_from_slice(&INDEX_MAGIC);
    h[8..12].copy_from_slice(&INDEX_VERSION.to_be_bytes());
    h[16..32].copy_from_slice(id.topic_id.as_bytes());
    h[32..36].copy_from_slice(&id.partition.to_be_bytes());
    h
}

/// Whether `bytes` is the index header of `id` in a version this code reads.
/// Returns the file's version.
pub(crate) fn check_index_header(bytes: &[u8], id: PartitionId) -> Result<u32, FormatError> {
    let version = check_index_version(bytes)?;
    if bytes.get(16..32) != Some(&id.topic_id.as_bytes()[..])
        || be_i32(bytes, 32) != Some(id.partition)
    {
        return Err(FormatError::Corrupt(
            "index header names another partition".into(),
        ));
    }
    Ok(version)
}

/// The version of the index file `bytes` starts, if this build reads it.
pub(crate) fn check_index_version(bytes: &[u8]) -> Result<u32, FormatError> {
    if bytes.get(..8) != Some(&INDEX_MAGIC[..]) {
        return Err(FormatError::Corrupt("bad index magic".into()));
    }
    match be_u32(bytes, 8) {
        Some(v) if INDEX_VERSIONS_READ.contains(&v) => Ok(v),
        Some(v) => Err(FormatError::Unsupported(format!(
            "index format version {v}; this build reads versions {INDEX_VERSIONS_READ:?}"
        ))),
        None => Err(FormatError::Corrupt("short index header".into())),
    }
}

/// How a partition uses one commit-log segment, as far as deleting that
/// segment is concerned. An upper bound, never less than the truth: a
/// segment may hold nothing of the partition that this says it holds, but
/// never more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SegmentUse {
    /// Bytes of the partition's batches indexed in the segment (not lowered
    /// when the log start passes them: the cleaner's estimate).
    pub bytes: u64,
    /// The largest last offset of the partition's batches in the segment:
    /// the segment holds nothing live once the log start passes it.
    pub max_last_offset: i64,
}

/// One partition's line in the checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CheckpointPartition {
    pub id: PartitionId,
    /// Every index entry with a base offset below this is durable in the index file.
    pub index_end_offset: i64,
    pub log_start: i64,
    /// What the index below `index_end_offset` adds up to; `None` in a
    /// version-1 checkpoint (the open then reads the whole index file).
    pub summary: Option<IndexSummary>,
}

/// Totals of a partition's index that an open would otherwise have to read
/// the whole index file for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct IndexSummary {
    /// Bytes of the batches from the log start up to the index end.
    pub live_bytes: u64,
    /// Segment base position to the partition's use of it.
    pub segments: Vec<(u64, SegmentUse)>,
}

/// The recovery checkpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Checkpoint {
    /// Commit-log position up to which every index file was durable.
    pub position: u64,
    pub partitions: Vec<CheckpointPartition>,
}

impl Checkpoint {
    /// Encode as the current version (2). A partition without a summary is
    /// written with an empty one.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(
            CHECKPOINT_HEADER_BYTES + self.partitions.len() * CHECKPOINT_V2_PARTITION_BYTES + 4,
        );
        b.extend_from_slice(&CHECKPOINT_MAGIC);
        b.extend_from_slice(&CHECKPOINT_VERSION.to_be_bytes());
        b.extend_from_slice(&(self.partitions.len() as u32).to_be_bytes());
        b.extend_from_slice(&self.position.to_be_bytes());
        let empty = IndexSummary::default();
        for p in &self.partitions {
            let summary = p.summary.as_ref().unwrap_or(&empty);
            b.extend_from_slice(p.id.topic_id.as_bytes());
            b.extend_from_slice(&p.id.partition.to_be_bytes());
            b.extend_from_slice(&[0; 4]);
            b.extend_from_slice(&p.index_end_offset.to_be_bytes());
            b.extend_from_slice(&p.log_start.to_be_bytes());
            b.extend_from_slice(&summary.live_bytes.to_be_bytes());
            b.extend_from_slice(&(summary.segments.len() as u32).to_be_bytes());
            b.extend_from_slice(&[0; 4]);
            for (base, u) in &summary.segments {
                b.extend_from_slice(&base.to_be_bytes());
                b.extend_from_slice(&u.bytes.to_be_bytes());
                b.extend_from_slice(&u.max_last_offset.to_be_bytes());
            }
        }
        let crc = crc32c::crc32c(&b);
        b.extend_from_slice(&crc.to_be_bytes());
        b
    }

    /// The version is checked before the CRC: a newer layout may put its
    /// CRC elsewhere, and must be reported as newer, not as damaged.
    pub fn decode(b: &[u8]) -> Result<Self, FormatError> {
        if b.get(..8) != Some(&CHECKPOINT_MAGIC[..]) {
            return Err(FormatError::Corrupt("bad checkpoint magic".into()));
        }
        let version = match be_u32(b, 8) {
            Some(v) if CHECKPOINT_VERSIONS_READ.contains(&v) => v,
            Some(v) => {
                return Err(FormatError::Unsupported(format!(
                    "checkpoint format version {v}; this build reads versions {CHECKPOINT_VERSIONS_READ:?}"
                )));
            }
            None => return Err(FormatError::Corrupt("short checkpoint".into())),
        };
        let body_len = b
            .len()
            .checked_sub(4)
            .ok_or_else(|| FormatError::Corrupt("short checkpoint".into()))?;
        if crc32c::crc32c(b.get(..body_len).unwrap_or_default()) != be_u32(b, body_len).unwrap_or(0)
        {
            return Err(FormatError::Corrupt("checkpoint CRC mismatch".into()));
        }
        Self::decode_body(b.get(..body_len).unwrap_or_default(), version)
            .map_err(FormatError::Corrupt)
    }

    fn decode_body(b: &[u8], version: u32) -> Result<Self, String> {
        let short = || "short checkpoint".to_string();
        let count = be_u32(b, 12).ok_or_else(short)? as usize;
        let position = be_u64(b, 16).ok_or_else(short)?;
        // Each record is at least 40 bytes: a count the file cannot hold is damage.
        if count > b.len() / CHECKPOINT_PARTITION_BYTES {
            return Err(format!(
                "checkpoint of {} bytes announces {count} partitions",
                b.len()
            ));
        }
        let mut partitions = Vec::with_capacity(count);
        let mut at = CHECKPOINT_HEADER_BYTES;
        for _ in 0..count {
            let topic = b
                .get(at..at + 16)
                .and_then(|s| Uuid::from_slice(s).ok())
                .ok_or_else(short)?;
            let id = PartitionId {
                topic_id: topic,
                partition: be_i32(b, at + 16).ok_or_else(short)?,
            };
            let index_end_offset = be_i64(b, at + 24).ok_or_else(short)?;
            let log_start = be_i64(b, at + 32).ok_or_else(short)?;
            let summary = if version == 1 {
                at += CHECKPOINT_PARTITION_BYTES;
                None
            } else {
                let live_bytes = be_u64(b, at + 40).ok_or_else(short)?;
                let uses = be_u32(b, at + 48).ok_or_else(short)? as usize;
                at += CHECKPOINT_V2_PARTITION_BYTES;
                if uses > b.len().saturating_sub(at) / CHECKPOINT_SEGMENT_USE_BYTES {
                    return Err(format!(
                        "checkpoint partition record announces {uses} segments"
                    ));
                }
                let mut segments = Vec::with_capacity(uses);
                for _ in 0..uses {
                    let base = be_u64(b, at).ok_or_else(short)?;
                    segments.push((
                        base,
                        SegmentUse {
                            bytes: be_u64(b, at + 8).ok_or_else(short)?,
                            max_last_offset: be_i64(b, at + 16).ok_or_else(short)?,
                        },
                    ));
                    at += CHECKPOINT_SEGMENT_USE_BYTES;
                }
                Some(IndexSummary {
                    live_bytes,
                    segments,
                })
            };
            partitions.push(CheckpointPartition {
                id,
                index_end_offset,
                log_start,
                summary,
            });
        }
        if at != b.len() {
            return Err(format!(
                "checkpoint of {} bytes holds {at} bytes of records",
                b.len()
            ));
        }
        Ok(Self {
            position,
            partitions,
        })
    }
}

/// Read a big-endian integer at `at`, `None` when out of bounds.
pub(crate) fn be_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// See [`be_u32`].
pub(crate) fn be_u64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// See [`be_u32`].
pub(crate) fn be_i16(b: &[u8], at: usize) -> Option<i16> {
    Some(i16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

/// See [`be_u32`].
pub(crate) fn be_i32(b: &[u8], at: usize) -> Option<i32> {
    Some(i32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// See [`be_u32`].
pub(crate) fn be_i64(b: &[u8], at: usize) -> Option<i64> {
    Some(i64::from_be_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pid() -> PartitionId {
        PartitionId {
            topic_id: Uuid::from_u128(0x1234),
            partition: 7,
        }
    }

    #[test]
    fn patched_entry_equals_an_entry_of_the_patched_batch() {
        for len in [21usize, 61, 1000] {
            let batch: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
            let mut patched_in_place = vec![9u8; 3];
            put_patched_entry(
                &mut patched_in_place,
                EntryKind::Batch,
                pid(),
                42,
                &batch,
                |b| {
                    b[0..8].copy_from_slice(&42i64.to_be_bytes());
                },
            );
            let mut patched = batch.clone();
            patched[0..8].copy_from_slice(&42i64.to_be_bytes());
            let mut direct = vec![9u8; 3];
            put_entry(&mut direct, EntryKind::Batch, pid(), 42, &patched);
            assert_eq!(patched_in_place, direct, "batch of {len} bytes");
        }
    }

    #[test]
    fn entry_header_round_trips_and_crc_covers_body() {
        let mut out = Vec::new();
        put_entry(&mut out, EntryKind::Relocated, pid(), 42, b"batch-bytes");
        let h = decode_entry_header(&out).unwrap();
        assert_eq!(h.kind, EntryKind::Relocated);
        assert_eq!(h.partition, pid());
        assert_eq!(h.base_offset, 42);
        assert_eq!(h.batch_len(), 11);
        assert_eq!(h.crc, crc32c::crc32c(&out[ENTRY_PREFIX_BYTES..]));
    }

    #[test]
    fn index_entry_round_trips_and_detects_damage() {
        let e = IndexEntry {
            base_offset: 10,
            last_offset_delta: 3,
            size: 100,
            position: 4096,
            max_timestamp: 99,
            producer_id: 5,
            producer_epoch: 1,
            attributes: 2,
            base_sequence: 9,
            running_max_ts: 120,
            tag_summary: 0x0001_8004,
        };
        let mut b = e.encode();
        assert_eq!(IndexEntry::decode(&b), Some(e));
        b[3] ^= 1;
        assert_eq!(IndexEntry::decode(&b), None);
    }

    #[test]
    fn an_index_entry_written_before_tag_summaries_reads_as_unknown() {
        // What earlier builds wrote: zeros in bytes 56..60, under the CRC.
        let mut b = sample_entry().encode();
        b[56..60].fill(0);
        let crc = crc32c::crc32c(&b[..60]);
        b[60..64].copy_from_slice(&crc.to_be_bytes());
        for version in INDEX_VERSIONS_READ {
            let e = IndexEntry::decode_in(&b, version).unwrap();
            assert_eq!(e.tag_summary, TAG_SUMMARY_UNKNOWN, "v{version}");
        }
    }

    fn sample_entry() -> IndexEntry {
        IndexEntry {
            base_offset: 7,
            last_offset_delta: 0,
            size: 61,
            position: 16,
            max_timestamp: 1,
            producer_id: -1,
            producer_epoch: -1,
            attributes: 0,
            base_sequence: -1,
            running_max_ts: 1,
            tag_summary: 0,
        }
    }

    #[test]
    fn each_segment_version_allows_exactly_its_kinds() {
        for version in SEGMENT_VERSIONS_READ {
            for byte in 0..=u8::MAX {
                let known = EntryKind::in_segment(version, byte).is_some();
                let last_kind = if version >= 3 { 4 } else { 3 };
                assert_eq!(
                    known,
                    (1..=last_kind).contains(&byte),
                    "v{version} kind {byte}"
                );
            }
        }
        assert_eq!(EntryKind::in_segment(SEGMENT_VERSION + 1, 1), None);
        assert!(SEGMENT_VERSIONS_READ.contains(&SEGMENT_VERSION));
    }

    #[test]
    fn newer_versions_are_unsupported_and_bad_magic_is_corrupt() {
        let mut seg = segment_header();
        assert_eq!(check_segment_header(&seg), Ok(SEGMENT_VERSION));
        seg[8..12].copy_from_slice(&(SEGMENT_VERSION + 1).to_be_bytes());
        assert!(matches!(
            check_segment_header(&seg),
            Err(FormatError::Unsupported(_))
        ));
        seg[0] = b'X';
        assert!(matches!(
            check_segment_header(&seg),
            Err(FormatError::Corrupt(_))
        ));
        let mut idx = index_header(pid());
        idx[8..12].copy_from_slice(&(INDEX_VERSION + 1).to_be_bytes());
        assert!(matches!(
            check_index_header(&idx, pid()),
            Err(FormatError::Unsupported(_))
        ));
        let mut cp = Checkpoint::default().encode();
        cp[8..12].copy_from_slice(&(CHECKPOINT_VERSION + 1).to_be_bytes());
        assert!(matches!(
            Checkpoint::decode(&cp),
            Err(FormatError::Unsupported(_))
        ));
    }

    #[test]
    fn checkpoint_round_trips_and_rejects_truncation() {
        let c = Checkpoint {
            position: 77,
            partitions: vec![CheckpointPartition {
                id: pid(),
                index_end_offset: 5,
                log_start: 2,
                summary: Some(IndexSummary {
                    live_bytes: 9,
                    segments: vec![(
                        16,
                        SegmentUse {
                            bytes: 50,
                            max_last_offset: 4,
                        },
                    )],
                }),
            }],
        };
        let b = c.encode();
        assert_eq!(Checkpoint::decode(&b).unwrap(), c);
        assert!(Checkpoint::decode(&b[..b.len() - 1]).is_err());
    }
}
