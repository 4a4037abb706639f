//! Byte layouts of the timer store's files: the schedule-log segment
//! header, the schedule record, and the checkpoint. `docs/format.md`
//! ("Timer store") draws the same layouts; keep the two in step. All
//! integers are big-endian, as in the rest of Weir's storage.
//!
//! Each file names its version; a reader accepts exactly
//! [`SEGMENT_VERSION`] and [`CHECKPOINT_VERSION`] and refuses any other
//! ([`DecodeError::Version`]). A change a reader of this version would
//! misread bumps the version.

use uuid::Uuid;

use super::TimerEntry;
use super::wheel::{ChainRef, Slot};

/// Magic at the start of every schedule-log segment.
pub(super) const SEGMENT_MAGIC: [u8; 8] = *b"WEIRTML\0";
/// The segment layout this build writes and reads.
pub(super) const SEGMENT_VERSION: u32 = 1;
/// Bytes of the segment header; records follow it.
pub(super) const SEGMENT_HEADER_BYTES: u64 = 24;
/// Bytes of one schedule record.
pub(super) const RECORD_BYTES: u64 = 48;
/// Bytes of a record the CRC covers (all but the CRC itself).
const RECORD_BODY_BYTES: usize = 44;

/// Magic at the start of the checkpoint file.
pub(super) const CHECKPOINT_MAGIC: [u8; 8] = *b"WEIRTCK\0";
/// The checkpoint layout this build writes and reads.
pub(super) const CHECKPOINT_VERSION: u32 = 1;
/// Bytes of the checkpoint's fixed part, before its lists.
const CHECKPOINT_FIXED_BYTES: usize = 144;
/// Bytes of one used-slot record.
const SLOT_RECORD_BYTES: usize = 40;
/// Bytes of one partition-count, cancel or progress record.
const PARTITION_RECORD_BYTES: usize = 32;
/// Flag: the last returned entry is present.
const FLAG_LAST_RETURNED: u32 = 1;
/// Flag: a slot is in hand.
const FLAG_HAND: u32 = 2;

/// The most slots a wheel may have.
pub(super) const SLOTS_MAX: u32 = 1 << 20;
/// The most partitions with pending entries.
pub(super) const PARTITIONS_MAX: usize = 1 << 20;
/// The most outstanding cancels.
pub(super) const CANCELS_MAX: usize = 65_536;
/// The most entries of the caller's progress map.
pub(super) const PROGRESS_MAX: usize = 1 << 20;
/// The largest checkpoint file read back; a longer one is corruption.
pub(super) const CHECKPOINT_BYTES_MAX: u64 = (CHECKPOINT_FIXED_BYTES
    + SLOT_RECORD_BYTES * SLOTS_MAX as usize
    + PARTITION_RECORD_BYTES * (PARTITIONS_MAX + CANCELS_MAX + PROGRESS_MAX)
    + 4) as u64;

/// Why a header, record or checkpoint was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum DecodeError {
    /// The file does not start with its magic; these are the first bytes.
    Magic(Vec<u8>),
    /// Well formed, of a version this build does not read.
    Version(u32),
    /// Damaged: short, bad checksum, inconsistent fields.
    Corrupt(String),
}

/// The first bytes of a file, for a message.
pub(super) fn show_bytes(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).escape_debug().to_string()
}

/// A segment header naming `base`, its first position.
pub(super) fn encode_segment_header(base: u64) -> [u8; SEGMENT_HEADER_BYTES as usize] {
    let mut b = [0u8; SEGMENT_HEADER_BYTES as usize];
    b[0..8].copy_from_slice(&SEGMENT_MAGIC);
    b[8..12].copy_from_slice(&SEGMENT_VERSION.to_be_bytes());
    b[16..24].copy_from_slice(&base.to_be_bytes());
    b
}

/// Check a segment header: magic, version, and the base its file name says.
pub(super) fn check_segment_header(bytes: &[u8], base: u64) -> Result<(), DecodeError> {
    let mut r = Reader::new(bytes);
    let magic = r.take(8)?;
    if magic != SEGMENT_MAGIC {
        return Err(DecodeError::Magic(magic.to_vec()));
    }
    let version = r.u32()?;
    if version != SEGMENT_VERSION {
        return Err(DecodeError::Version(version));
    }
    r.u32()?;
    let found = r.u64()?;
    if found != base {
        return Err(DecodeError::Corrupt(format!(
            "the header names first position {found}, the file name {base}"
        )));
    }
    Ok(())
}

/// One schedule record: an entry and the position of the record before it
/// in the same chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Record {
    /// The scheduled entry (its due time already clamped).
    pub entry: TimerEntry,
    /// The previous record of the chain; `None` for the chain's first.
    pub prev: Option<u64>,
}

impl Record {
    /// The record's bytes.
    pub fn encode(&self) -> [u8; RECORD_BYTES as usize] {
        let mut b = [0u8; RECORD_BYTES as usize];
        let e = &self.entry;
        b[0..8].copy_from_slice(&e.due_ms.to_be_bytes());
        b[8..24].copy_from_slice(e.topic_id.as_bytes());
        b[24..28].copy_from_slice(&e.partition.to_be_bytes());
        b[28..36].copy_from_slice(&e.offset.to_be_bytes());
        let prev = self.prev.map_or(-1, |p| p as i64);
        b[36..44].copy_from_slice(&prev.to_be_bytes());
        let crc = crc32c::crc32c(&b[..RECORD_BODY_BYTES]);
        b[44..48].copy_from_slice(&crc.to_be_bytes());
        b
    }

    /// A record from its bytes; the CRC must hold and `prev` be -1 or a
    /// position.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let body = r.take(RECORD_BODY_BYTES)?;
        let crc = r.u32()?;
        if crc32c::crc32c(body) != crc {
            return Err(DecodeError::Corrupt("record CRC mismatch".into()));
        }
        let mut r = Reader::new(body);
        let entry = read_entry(&mut r, false)?;
        let prev = match r.i64()? {
            -1 => None,
            p if p >= 0 => Some(p as u64),
            p => return Err(DecodeError::Corrupt(format!("previous position {p}"))),
        };
        Ok(Self { entry, prev })
    }
}

/// The slot in hand when a checkpoint was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct HandRef {
    /// The slot's start.
    pub time_ms: i64,
    /// Its chain, as loaded, plus the entries added into it since.
    pub chain: ChainRef,
    /// Entries of the set not yet handed out.
    pub remaining: u64,
}

/// Everything a checkpoint holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Checkpoint {
    /// The wheel's slot length.
    pub slot_ms: i64,
    /// The wheel's slot count.
    pub slots: u32,
    /// The slot the store processes next (or holds in hand).
    pub cursor_ms: i64,
    /// The schedule-log position up to which the log is durable and vouched for.
    pub log_end: u64,
    /// The largest entry `poll` had handed out (or skipped as cancelled).
    pub last_returned: Option<TimerEntry>,
    /// The slot in hand, if one was.
    pub hand: Option<HandRef>,
    /// Every slot with a non-empty chain, by index, ascending.
    pub used_slots: Vec<(u32, Slot)>,
    /// Pending entries per partition (each above 0), ascending.
    pub pending: Vec<(Uuid, i32, u64)>,
    /// Outstanding cancels, ascending.
    pub cancels: Vec<(Uuid, i32, i64)>,
    /// The caller's progress map, as given.
    pub progress: Vec<(Uuid, i32, i64)>,
}

impl Checkpoint {
    /// The file's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let lists = self.pending.len() + self.cancels.len() + self.progress.len();
        let mut b = Vec::with_capacity(
            CHECKPOINT_FIXED_BYTES
                + SLOT_RECORD_BYTES * self.used_slots.len()
                + PARTITION_RECORD_BYTES * lists
                + 4,
        );
        let flags = if self.last_returned.is_some() {
            FLAG_LAST_RETURNED
        } else {
            0
        } | if self.hand.is_some() { FLAG_HAND } else { 0 };
        b.extend_from_slice(&CHECKPOINT_MAGIC);
        b.extend_from_slice(&CHECKPOINT_VERSION.to_be_bytes());
        b.extend_from_slice(&flags.to_be_bytes());
        b.extend_from_slice(&self.slot_ms.to_be_bytes());
        b.extend_from_slice(&self.slots.to_be_bytes());
        b.extend_from_slice(&(self.used_slots.len() as u32).to_be_bytes());
        b.extend_from_slice(&self.cursor_ms.to_be_bytes());
        b.extend_from_slice(&self.log_end.to_be_bytes());
        let last = self.last_returned.unwrap_or(TimerEntry {
            due_ms: 0,
            topic_id: Uuid::nil(),
            partition: 0,
            offset: 0,
        });
        b.extend_from_slice(&last.due_ms.to_be_bytes());
        put_partition(&mut b, last.topic_id, last.partition);
        b.extend_from_slice(&last.offset.to_be_bytes());
        let hand = self.hand.unwrap_or(HandRef {
            time_ms: 0,
            chain: ChainRef::default(),
            remaining: 0,
        });
        b.extend_from_slice(&hand.time_ms.to_be_bytes());
        put_chain(&mut b, &hand.chain);
        b.extend_from_slice(&hand.remaining.to_be_bytes());
        for n in [
            self.pending.len(),
            self.cancels.len(),
            self.progress.len(),
            0,
        ] {
            b.extend_from_slice(&(n as u32).to_be_bytes());
        }
        for (index, slot) in &self.used_slots {
            b.extend_from_slice(&index.to_be_bytes());
            b.extend_from_slice(&0u32.to_be_bytes());
            b.extend_from_slice(&slot.time_ms.to_be_bytes());
            put_chain(&mut b, &slot.chain);
        }
        for &(topic, partition, count) in &self.pending {
            put_partition(&mut b, topic, partition);
            b.extend_from_slice(&count.to_be_bytes());
        }
        for &(topic, partition, offset) in self.cancels.iter().chain(&self.progress) {
            put_partition(&mut b, topic, partition);
            b.extend_from_slice(&offset.to_be_bytes());
        }
        let crc = crc32c::crc32c(&b);
        b.extend_from_slice(&crc.to_be_bytes());
        b
    }

    /// A checkpoint from the file's bytes: magic, then version, then the
    /// CRC, then every count against its limit (`slots` is the config's,
    /// so a used-slot list longer than the wheel is corruption) and every
    /// list's order. Whether the wheel matches the config, and the slots
    /// the cursor, is the caller's check.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let magic = r.take(8)?;
        if magic != CHECKPOINT_MAGIC {
            return Err(DecodeError::Magic(magic.to_vec()));
        }
        let version = r.u32()?;
        if version != CHECKPOINT_VERSION {
            return Err(DecodeError::Version(version));
        }
        let body_len = bytes
            .len()
            .checked_sub(4)
            .ok_or_else(|| corrupt("shorter than its CRC"))?;
        let body = bytes.get(..body_len).ok_or_else(|| corrupt("short"))?;
        let crc = Reader::new(bytes.get(body_len..).unwrap_or_default()).u32()?;
        if crc32c::crc32c(body) != crc {
            return Err(corrupt("checkpoint CRC mismatch"));
        }
        let mut r = Reader::new(body);
        r.take(12)?;
        let flags = r.u32()?;
        if flags & !(FLAG_LAST_RETURNED | FLAG_HAND) != 0 {
            return Err(corrupt(format!("unknown flags {flags:#x}")));
        }
        let slot_ms = r.i64()?;
        let slots = r.u32()?;
        let used = r.u32()? as usize;
        let cursor_ms = r.i64()?;
        let log_end = r.u64()?;
        let last = read_entry(&mut r, true)?;
        let last_returned = (flags & FLAG_LAST_RETURNED != 0).then_some(last);
        let hand = HandRef {
            time_ms: r.i64()?,
            chain: read_chain(&mut r)?,
            remaining: r.u64()?,
        };
        let hand = (flags & FLAG_HAND != 0).then_some(hand);
        let partitions = r.u32()? as usize;
        let cancels = r.u32()? as usize;
        let progress = r.u32()? as usize;
        r.u32()?;
        for (what, n, max) in [
            ("used slots", used, slots.min(SLOTS_MAX) as usize),
            ("partition counts", partitions, PARTITIONS_MAX),
            ("cancels", cancels, CANCELS_MAX),
            ("progress entries", progress, PROGRESS_MAX),
        ] {
            if n > max {
                return Err(corrupt(format!("{n} {what}, more than {max}")));
            }
        }
        let expected = CHECKPOINT_FIXED_BYTES
            + SLOT_RECORD_BYTES * used
            + PARTITION_RECORD_BYTES * (partitions + cancels + progress);
        if body_len != expected {
            return Err(corrupt(format!(
                "{body_len} bytes before the CRC where its counts make {expected}"
            )));
        }
        let mut used_slots = Vec::with_capacity(used);
        for _ in 0..used {
            let index = r.u32()?;
            r.u32()?;
            let slot = Slot {
                time_ms: r.i64()?,
                chain: read_chain(&mut r)?,
            };
            used_slots.push((index, slot));
        }
        let mut pending = Vec::with_capacity(partitions);
        for _ in 0..partitions {
            let (topic, partition) = read_partition(&mut r)?;
            pending.push((topic, partition, r.u64()?));
        }
        let cancels = read_offsets(&mut r, cancels)?;
        let progress = read_offsets(&mut r, progress)?;
        let checkpoint = Self {
            slot_ms,
            slots,
            cursor_ms,
            log_end,
            last_returned,
            hand,
            used_slots,
            pending,
            cancels,
            progress,
        };
        checkpoint.check_lists()?;
        Ok(checkpoint)
    }

    /// The lists' own rules: used slots ascending, inside the wheel, each
    /// chain within the log; partition counts above 0 and ascending;
    /// cancels ascending.
    fn check_lists(&self) -> Result<(), DecodeError> {
        if self.log_end > i64::MAX as u64 {
            return Err(corrupt(format!(
                "log end {} past the largest position",
                self.log_end
            )));
        }
        let chain_ok = |c: &ChainRef| c.count == 0 || (c.first <= c.last && c.last < self.log_end);
        let mut before = None;
        for (index, slot) in &self.used_slots {
            if *index >= self.slots || before.is_some_and(|b| b >= *index) {
                return Err(corrupt(format!("used slot {index} out of order or range")));
            }
            if slot.chain.count == 0 || !chain_ok(&slot.chain) {
                return Err(corrupt(format!(
                    "slot {index}'s chain {:?} is empty or past the log end {}",
                    slot.chain, self.log_end
                )));
            }
            before = Some(*index);
        }
        if let Some(hand) = &self.hand
            && !chain_ok(&hand.chain)
        {
            return Err(corrupt(format!(
                "the chain in hand {:?} is past the log end {}",
                hand.chain, self.log_end
            )));
        }
        if self.pending.iter().any(|p| p.2 == 0)
            || !self.pending.is_sorted_by(|a, b| (a.0, a.1) < (b.0, b.1))
        {
            return Err(corrupt("partition counts not above 0 and ascending"));
        }
        if !self.cancels.is_sorted_by(|a, b| a < b) {
            return Err(corrupt("cancels not ascending"));
        }
        Ok(())
    }
}

fn corrupt(detail: impl Into<String>) -> DecodeError {
    DecodeError::Corrupt(detail.into())
}

fn put_partition(b: &mut Vec<u8>, topic: Uuid, partition: i32) {
    b.extend_from_slice(topic.as_bytes());
    b.extend_from_slice(&partition.to_be_bytes());
    b.extend_from_slice(&0u32.to_be_bytes());
}

fn put_chain(b: &mut Vec<u8>, chain: &ChainRef) {
    b.extend_from_slice(&chain.first.to_be_bytes());
    b.extend_from_slice(&chain.last.to_be_bytes());
    b.extend_from_slice(&chain.count.to_be_bytes());
}

/// An entry's fields: due time, topic, partition, then offset, with 4 zero
/// bytes before the offset when `padded` (in the checkpoint; a schedule
/// record packs them into 36 bytes).
fn read_entry(r: &mut Reader<'_>, padded: bool) -> Result<TimerEntry, DecodeError> {
    let due_ms = r.i64()?;
    let topic_id = r.uuid()?;
    let partition = r.i32()?;
    if padded {
        r.u32()?;
    }
    Ok(TimerEntry {
        due_ms,
        topic_id,
        partition,
        offset: r.i64()?,
    })
}

fn read_chain(r: &mut Reader<'_>) -> Result<ChainRef, DecodeError> {
    Ok(ChainRef {
        first: r.u64()?,
        last: r.u64()?,
        count: r.u64()?,
    })
}

fn read_partition(r: &mut Reader<'_>) -> Result<(Uuid, i32), DecodeError> {
    let topic = r.uuid()?;
    let partition = r.i32()?;
    r.u32()?;
    Ok((topic, partition))
}

fn read_offsets(r: &mut Reader<'_>, n: usize) -> Result<Vec<(Uuid, i32, i64)>, DecodeError> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let (topic, partition) = read_partition(r)?;
        out.push((topic, partition, r.i64()?));
    }
    Ok(out)
}

/// Big-endian reads from a byte slice that fail on a short slice instead
/// of panicking.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, at: 0 }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.at.checked_add(n).ok_or_else(|| corrupt("short"))?;
        let slice = self
            .bytes
            .get(self.at..end)
            .ok_or_else(|| corrupt(format!("short: {} bytes, needed {end}", self.bytes.len())))?;
        self.at = end;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        self.array().map(u32::from_be_bytes)
    }

    fn i32(&mut self) -> Result<i32, DecodeError> {
        self.array().map(i32::from_be_bytes)
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        self.array().map(u64::from_be_bytes)
    }

    fn i64(&mut self) -> Result<i64, DecodeError> {
        self.array().map(i64::from_be_bytes)
    }

    fn uuid(&mut self) -> Result<Uuid, DecodeError> {
        self.array().map(Uuid::from_bytes)
    }
}
