//! The timer store: a durable schedule of `(due time, record identity)`
//! for delayed delivery, whose memory follows what is due soon, not
//! everything pending (RocketMQ 5's TimerLog and TimerWheel).
//!
//! It owns one folder (`<data>/timer/`, the caller's choice) and three
//! things in it:
//!
//! - the **schedule log** (`log.rs`): append-only segments of fixed-size
//!   records, each an entry and the position of the record before it in
//!   the same slot's chain;
//! - the **wheel** (`wheel.rs`): `slots` slots of `slot_ms`, each the head
//!   of a chain in the log. An entry goes into slot `(due / slot_ms) mod
//!   slots`, even when it is due revolutions away; when its slot comes up,
//!   the entries of that revolution are sorted into the set in hand and the
//!   others are appended again (rolled) for the slot's next revolution, so
//!   the log below the oldest chain can be deleted;
//! - the **checkpoint**: the cursor, the wheel, counts, cancels and the
//!   caller's progress map, replaced atomically.
//!
//! Memory is the wheel (32 bytes a slot) plus the set in hand (one slot's
//! entries of one revolution), plus the per-partition counts and the
//! bounded cancels. The store knows nothing of partitions beyond the ids
//! it is given; it never reads the clock (every call that needs the time
//! is given it).
//!
//! **Crash rule.** Nothing is durable until [`TimerStore::checkpoint`]:
//! it makes the log durable to its end, then replaces the checkpoint.
//! [`TimerStore::open`] comes back exactly at the last checkpoint: records
//! of the log past the end it vouches for are cut (they were never part of
//! a checkpoint; this is the recovery rule, not a repair), entries `poll`
//! handed out after it are handed out again, and entries added or
//! cancelled after it are the caller's to add or cancel again (`open`
//! returns the progress map the caller stored with the checkpoint to know
//! where to start). Damage inside what a checkpoint vouches for, an
//! unknown file version, or a wheel other than the stored one refuses the
//! open and changes nothing. Failpoints (`storage::timer_*`, see
//! `docs/format.md`, "Timer store") sit in front of each durable step.

mod error;
mod format;
mod log;
#[cfg(test)]
mod tests;
mod wheel;

use std::collections::{BTreeSet, BinaryHeap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use uuid::Uuid;

pub use error::TimerError;
use format::{
    CANCELS_MAX, CHECKPOINT_BYTES_MAX, CHECKPOINT_MAGIC, CHECKPOINT_VERSION, Checkpoint,
    DecodeError, HandRef, PARTITIONS_MAX, PROGRESS_MAX, Record, SLOTS_MAX, show_bytes,
};
use log::{ReadCache, ScheduleLog};
use wheel::{ChainRef, Slot, Wheel};

use crate::io::{FileIo, OsIo, durable};

/// The checkpoint's file name in the timer folder.
const CHECKPOINT_FILE: &str = "checkpoint";
/// Where a new checkpoint is written before it is renamed into place.
const CHECKPOINT_TMP_FILE: &str = "checkpoint.tmp";
/// Bytes of a schedule-log segment file, header included.
const SEGMENT_BYTES: u64 = 64 << 20;
/// The longest a revolution may be (about 35 years): keeps every sum of
/// times far from overflowing.
const REVOLUTION_MS_MAX: i64 = 1 << 40;

/// One scheduled delivery: a source record's identity and when it is due.
///
/// Entries order by `(due_ms, topic_id, partition, offset)`, the order
/// [`TimerStore::poll`] hands them out in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TimerEntry {
    /// When the record is due, in milliseconds since the Unix epoch.
    pub due_ms: i64,
    /// The source record's topic (opaque to the store).
    pub topic_id: Uuid,
    /// The source record's partition (opaque to the store).
    pub partition: i32,
    /// The source record's offset (opaque to the store).
    pub offset: i64,
}

/// The caller's progress map, stored with each checkpoint and handed back
/// by [`TimerStore::open`]: `(topic, partition, offset)`, meaning "every
/// source record of this partition below this offset was added". Opaque to
/// the store.
pub type TimerProgress = Vec<(Uuid, i32, i64)>;

/// The shape of the wheel. A store must be reopened with the shape it was
/// created with ([`TimerError::ConfigMismatch`] otherwise).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerConfig {
    /// Milliseconds one slot covers (at least 1): the granularity of
    /// loading, not of delivery (entries come out at their own due time).
    pub slot_ms: i64,
    /// Slots in the wheel, 1 ..= 1,048,576. `slot_ms * slots` is a
    /// revolution; entries due further out are rolled once per revolution.
    pub slots: u32,
}

impl Default for TimerConfig {
    /// One-second slots, 131,072 of them: a revolution of about 36 hours,
    /// a wheel of 4 MiB.
    fn default() -> Self {
        Self {
            slot_ms: 1_000,
            slots: 1 << 17,
        }
    }
}

/// What [`TimerStore::scan`] found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ScanResult {
    /// The earliest matching entries (at most `max_results`), by due time
    /// (the order `poll` would hand them out in).
    pub entries: Vec<TimerEntry>,
    /// Matching entries met, including those beyond `max_results`.
    pub matched: u64,
    /// Every pending entry was examined: `max_reads` was not reached.
    pub complete: bool,
}

/// Limits a test may lower.
#[derive(Debug, Clone, Copy)]
struct Tuning {
    segment_bytes: u64,
    cancels_max: usize,
}

impl Default for Tuning {
    fn default() -> Self {
        Self {
            segment_bytes: SEGMENT_BYTES,
            cancels_max: CANCELS_MAX,
        }
    }
}

/// The slot being handed out: its entries of the current revolution,
/// sorted, and the chain they came from (kept so that a checkpoint taken
/// now can bring the rest back).
#[derive(Debug)]
struct Hand {
    /// The slot's start (the cursor).
    time_ms: i64,
    /// The slot's chain as loaded, plus the entries added into the set since.
    chain: ChainRef,
    /// Entries not yet handed out, each above the last one handed out.
    entries: BTreeSet<TimerEntry>,
}

/// The durable schedule. See the module documentation for what it owns
/// and its crash rule. Not thread-safe by itself: one owner calls it.
pub struct TimerStore {
    dir: PathBuf,
    io: Arc<dyn FileIo>,
    wheel: Wheel,
    log: ScheduleLog,
    cache: ReadCache,
    /// Start of the slot processed next, or held in hand.
    cursor_ms: i64,
    hand: Option<Hand>,
    /// The largest entry handed out or skipped as cancelled; every later
    /// one is larger.
    last_returned: Option<TimerEntry>,
    /// Pending entries by partition (none at 0).
    pending: HashMap<(Uuid, i32), u64>,
    pending_total: u64,
    /// Outstanding cancels by partition (no empty set).
    cancels: HashMap<(Uuid, i32), HashSet<i64>>,
    cancels_total: usize,
    cancels_max: usize,
    poisoned: Option<Arc<str>>,
    /// The largest the set in hand has been (for tests).
    #[cfg_attr(not(test), allow(dead_code))]
    hand_high_water: usize,
}

impl TimerStore {
    /// The longest delay past the cursor an entry may have: ten years.
    pub const DELAY_MS_MAX: i64 = 10 * 366 * 24 * 3600 * 1000;
    /// The largest time accepted (the end of year 9999).
    pub const TIME_MS_MAX: i64 = 253_402_300_799_999;
    /// The most cancels outstanding at once.
    pub const CANCELS_MAX: usize = CANCELS_MAX;
    /// The most entries of the progress map a checkpoint holds.
    pub const PROGRESS_MAX: usize = PROGRESS_MAX;
    /// The most partitions with pending entries at once.
    pub const PARTITIONS_MAX: usize = PARTITIONS_MAX;

    /// Open the store in `dir` (created if missing) with the wheel `config`,
    /// the time being `now_ms`. Returns the store and the progress map the
    /// caller stored with the last checkpoint (empty without one).
    ///
    /// Without a checkpoint the store starts empty, its cursor at `now_ms`
    /// rounded down to a slot, and any segment left by a run that never
    /// checkpointed is deleted. With one, the store is exactly as it was
    /// when the checkpoint was written: the log is cut at the end the
    /// checkpoint vouches for, segments it does not need are deleted, and
    /// the slot that was in hand is loaded again (less what was handed out
    /// before the checkpoint). The caller then re-adds every entry it added
    /// after the checkpoint, from its progress map.
    ///
    /// Refused, with nothing changed: a checkpoint or segment of another
    /// magic or version, a checkpoint written with another `slot_ms` or
    /// `slots`, a CRC mismatch or missing segment inside the checkpointed
    /// range.
    pub fn open(
        dir: &Path,
        config: TimerConfig,
        now_ms: i64,
    ) -> Result<(Self, TimerProgress), TimerError> {
        Self::open_with(dir, config, now_ms, Tuning::default(), Arc::new(OsIo))
    }

    fn open_with(
        dir: &Path,
        config: TimerConfig,
        now_ms: i64,
        tuning: Tuning,
        io: Arc<dyn FileIo>,
    ) -> Result<(Self, TimerProgress), TimerError> {
        check_config(&config)?;
        check_time(now_ms)?;
        io.create_dir_all(dir)
            .map_err(|e| TimerError::io(format!("creating {}", dir.display()), e))?;
        let wheel = Wheel::new(config.slot_ms, config.slots);
        let Some(checkpoint) = read_checkpoint(dir, io.as_ref(), &config)? else {
            let mut log = ScheduleLog::open(dir, Arc::clone(&io), tuning.segment_bytes, 0, 0)?;
            log.remove_unneeded()?;
            let cursor_ms = wheel.slot_start(now_ms);
            let store = Self::assemble(dir, io, wheel, log, cursor_ms, tuning);
            return Ok((store, Vec::new()));
        };
        Self::restore(dir, io, wheel, checkpoint, tuning)
    }

    fn assemble(
        dir: &Path,
        io: Arc<dyn FileIo>,
        wheel: Wheel,
        log: ScheduleLog,
        cursor_ms: i64,
        tuning: Tuning,
    ) -> Self {
        Self {
            dir: dir.to_path_buf(),
            io,
            wheel,
            log,
            cache: ReadCache::default(),
            cursor_ms,
            hand: None,
            last_returned: None,
            pending: HashMap::new(),
            pending_total: 0,
            cancels: HashMap::new(),
            cancels_total: 0,
            cancels_max: tuning.cancels_max,
            poisoned: None,
            hand_high_water: 0,
        }
    }

    /// The store as `checkpoint` left it.
    fn restore(
        dir: &Path,
        io: Arc<dyn FileIo>,
        mut wheel: Wheel,
        checkpoint: Checkpoint,
        tuning: Tuning,
    ) -> Result<(Self, TimerProgress), TimerError> {
        let file = dir.join(CHECKPOINT_FILE).display().to_string();
        let corrupt = |detail: String| TimerError::Corrupt {
            file: file.clone(),
            detail,
        };
        let Checkpoint {
            cursor_ms,
            log_end,
            last_returned,
            hand,
            used_slots,
            pending,
            cancels,
            progress,
            ..
        } = checkpoint;
        check_time(cursor_ms).map_err(|e| corrupt(format!("cursor: {e}")))?;
        if wheel.slot_start(cursor_ms) != cursor_ms || hand.is_some_and(|h| h.time_ms != cursor_ms)
        {
            return Err(corrupt(format!(
                "cursor {cursor_ms} (hand {:?}) is not a slot start",
                hand.map(|h| h.time_ms)
            )));
        }
        let floor_end = cursor_ms + if hand.is_some() { wheel.slot_ms() } else { 0 };
        if last_returned.is_some_and(|w| w.due_ms >= floor_end) {
            return Err(corrupt(format!(
                "the last entry handed out {last_returned:?} is not before the cursor {cursor_ms}"
            )));
        }
        for (index, slot) in used_slots {
            let expected = wheel.next_time(index as usize, cursor_ms, hand.is_some());
            if slot.time_ms != expected {
                return Err(corrupt(format!(
                    "slot {index} holds time {}, the cursor {cursor_ms} puts it at {expected}",
                    slot.time_ms
                )));
            }
            if let Some(s) = wheel.get_mut(index as usize) {
                *s = slot;
            }
        }
        let mut pending_total = 0u64;
        for (_, _, count) in &pending {
            pending_total = pending_total
                .checked_add(*count)
                .ok_or_else(|| corrupt(format!("pending counts overflow at {count}")))?;
        }
        let remaining = hand.map_or(0, |h| h.remaining);
        if Some(pending_total) != wheel.records().checked_add(remaining) {
            return Err(corrupt(format!(
                "{pending_total} entries pending by partition, but the chains hold {} records \
                 and the hand {remaining}",
                wheel.records(),
            )));
        }
        let keep_from = [wheel.lowest_position(), hand.and_then(|h| h.chain.lowest())]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(log_end);
        let log = ScheduleLog::open(
            dir,
            Arc::clone(&io),
            tuning.segment_bytes,
            keep_from,
            log_end,
        )?;
        let mut store = Self::assemble(dir, io, wheel, log, cursor_ms, tuning);
        store.last_returned = last_returned;
        store.pending_total = pending_total;
        store.pending = pending.into_iter().map(|(t, p, n)| ((t, p), n)).collect();
        for (topic, partition, offset) in cancels {
            store
                .cancels
                .entry((topic, partition))
                .or_default()
                .insert(offset);
            store.cancels_total += 1;
        }
        if let Some(hand) = hand {
            store.reload_hand(hand)?;
        }
        // Every check passed: only now is anything on disk changed.
        store.log.remove_unneeded()?;
        Ok((store, progress))
    }

    /// Load the slot that was in hand at the checkpoint: the entries of its
    /// revolution above the last one handed out. Those of later revolutions
    /// were rolled when it was first loaded, and are in its new chain.
    fn reload_hand(&mut self, hand: HandRef) -> Result<(), TimerError> {
        let end = hand.time_ms + self.wheel.slot_ms();
        let mut entries = BTreeSet::new();
        let mut walk = ChainWalk::new(hand.chain);
        while let Some(e) = walk.next(&self.log, &mut self.cache, &self.dir)? {
            self.check_in_slot(&e, hand.time_ms)?;
            if e.due_ms < end && self.last_returned.is_none_or(|w| e > w) {
                entries.insert(e);
            }
        }
        if entries.len() as u64 != hand.remaining {
            return Err(TimerError::corrupt(
                self.dir.join(CHECKPOINT_FILE).display(),
                format!(
                    "the slot in hand at {} has {} entries left in its chain, the checkpoint \
                     says {}",
                    hand.time_ms,
                    entries.len(),
                    hand.remaining
                ),
            ));
        }
        self.hand_high_water = self.hand_high_water.max(entries.len());
        self.hand = Some(Hand {
            time_ms: hand.time_ms,
            chain: hand.chain,
            entries,
        });
        Ok(())
    }

    /// Schedule `entry`; returns it as scheduled.
    ///
    /// Its due time is clamped up to the store's floor (the largest due
    /// time handed out so far, or the cursor), so that `poll` hands
    /// everything out in non-decreasing due order even when an entry comes
    /// late or is already past due; an entry that would then sort at or
    /// before the last one handed out is due 1 ms after it. If it falls in
    /// the slot in hand, it joins that set (and is appended to that slot's
    /// chain in the log, so a checkpoint covers it). The same entry (same
    /// due time and record) added twice is handed out once. Not durable
    /// until the next checkpoint; entries more than
    /// [`Self::DELAY_MS_MAX`] past the cursor are refused.
    pub fn add(&mut self, entry: TimerEntry) -> Result<TimerEntry, TimerError> {
        self.refuse_if_poisoned()?;
        let result = self.add_inner(entry);
        self.settle(result)
    }

    fn add_inner(&mut self, entry: TimerEntry) -> Result<TimerEntry, TimerError> {
        if entry.due_ms.saturating_sub(self.cursor_ms) > Self::DELAY_MS_MAX {
            return Err(TimerError::DueOutOfRange {
                due_ms: entry.due_ms,
                cursor_ms: self.cursor_ms,
                delay_max_ms: Self::DELAY_MS_MAX,
            });
        }
        let key = (entry.topic_id, entry.partition);
        if !self.pending.contains_key(&key) && self.pending.len() >= PARTITIONS_MAX {
            return Err(TimerError::TooManyPartitions {
                limit: PARTITIONS_MAX,
            });
        }
        let mut e = entry;
        e.due_ms = e.due_ms.max(self.floor());
        if let Some(w) = self.last_returned
            && e <= w
        {
            e.due_ms = w.due_ms + 1;
        }
        if self.last_returned.is_some_and(|w| e <= w) || e.due_ms < self.floor() {
            return Err(TimerError::invariant(format!(
                "entry {e:?} scheduled at or before the last one handed out {:?} (floor {})",
                self.last_returned,
                self.floor()
            )));
        }
        let slot_ms = self.wheel.slot_ms();
        if let Some(hand) = self.hand.as_mut()
            && e.due_ms < hand.time_ms + slot_ms
        {
            if hand.entries.contains(&e) {
                return Ok(e);
            }
            let pos = self.log.append(&Record {
                entry: e,
                prev: hand.chain.tail(),
            })?;
            hand.chain.push(pos);
            hand.entries.insert(e);
            self.hand_high_water = self.hand_high_water.max(hand.entries.len());
        } else {
            let index = self.wheel.index(e.due_ms);
            let time = self
                .wheel
                .next_time(index, self.cursor_ms, self.hand.is_some());
            let Some(slot) = self.wheel.get(index).copied() else {
                return Err(TimerError::invariant(format!("no slot {index}")));
            };
            if e.due_ms < time || (slot.chain.count > 0 && slot.time_ms != time) {
                return Err(TimerError::invariant(format!(
                    "entry {e:?} for slot {index} next due at {time}, which holds time {} \
                     ({} records), cursor {}",
                    slot.time_ms, slot.chain.count, self.cursor_ms
                )));
            }
            let pos = self.log.append(&Record {
                entry: e,
                prev: slot.chain.tail(),
            })?;
            if let Some(slot) = self.wheel.get_mut(index) {
                slot.time_ms = time;
                slot.chain.push(pos);
            }
        }
        *self.pending.entry(key).or_insert(0) += 1;
        self.pending_total += 1;
        Ok(e)
    }

    /// Up to `max` entries due at or before `now_ms`, in order of
    /// `(due_ms, topic_id, partition, offset)`, each after every entry
    /// returned before (never before its due time, never twice between two
    /// opens). Cancelled entries are skipped.
    ///
    /// Slots are processed from the cursor: once a slot's time has come its
    /// chain is read, entries of later revolutions are rolled, and the rest
    /// are held sorted and handed out as they come due; the cursor moves on
    /// once that set is empty and the slot's time has passed.
    pub fn poll(&mut self, now_ms: i64, max: usize) -> Result<Vec<TimerEntry>, TimerError> {
        self.refuse_if_poisoned()?;
        check_time(now_ms)?;
        let mut out = Vec::new();
        let result = self.poll_into(now_ms, max, &mut out);
        match self.settle(result) {
            Ok(()) => Ok(out),
            // Entries already taken from the set are handed out; the failed
            // read is met again (and reported) by the next poll.
            Err(e) if !out.is_empty() && !e.poisons() => {
                tracing::warn!(error = %e, "timer poll stopped early");
                Ok(out)
            }
            Err(e) => Err(e),
        }
    }

    fn poll_into(
        &mut self,
        now_ms: i64,
        max: usize,
        out: &mut Vec<TimerEntry>,
    ) -> Result<(), TimerError> {
        let slot_ms = self.wheel.slot_ms();
        while out.len() < max {
            let Some(hand_time) = self.hand.as_ref().map(|h| h.time_ms) else {
                if self.cursor_ms > now_ms {
                    break;
                }
                if self.pending_total == 0 {
                    // Every chain is empty: go straight to the slot of now.
                    self.cursor_ms = self.wheel.slot_start(now_ms);
                }
                let index = self.wheel.index(self.cursor_ms);
                let empty = self.wheel.get(index).is_none_or(|s| s.chain.count == 0);
                if empty && now_ms >= self.cursor_ms + slot_ms {
                    self.cursor_ms += slot_ms;
                } else {
                    self.load_slot()?;
                }
                continue;
            };
            while out.len() < max {
                let Some(e) = self.take_due(now_ms)? else {
                    break;
                };
                if !self.take_cancel(&e) {
                    out.push(e);
                }
                self.forget(&e)?;
            }
            let done = self.hand.as_ref().is_some_and(|h| h.entries.is_empty());
            if !done || now_ms < hand_time + slot_ms {
                break;
            }
            self.hand = None;
            self.cursor_ms = hand_time + slot_ms;
        }
        Ok(())
    }

    /// The first entry in hand if it is due, taken out and recorded as the
    /// last one handed out.
    fn take_due(&mut self, now_ms: i64) -> Result<Option<TimerEntry>, TimerError> {
        let Some(hand) = self.hand.as_mut() else {
            return Ok(None);
        };
        if hand.entries.first().is_none_or(|e| e.due_ms > now_ms) {
            return Ok(None);
        }
        let Some(e) = hand.entries.pop_first() else {
            return Ok(None);
        };
        if let Some(w) = self.last_returned
            && e <= w
        {
            return Err(TimerError::invariant(format!(
                "entry {e:?} would be handed out after {w:?}"
            )));
        }
        if e.due_ms < hand.time_ms || e.due_ms >= hand.time_ms + self.wheel.slot_ms() {
            return Err(TimerError::invariant(format!(
                "entry {e:?} in the hand of slot time {}",
                hand.time_ms
            )));
        }
        self.last_returned = Some(e);
        Ok(Some(e))
    }

    /// Load the slot at the cursor into the hand: read its chain, keep the
    /// entries of this revolution, roll the others into the slot's chain for
    /// the next revolution (dropping those cancelled). Nothing in memory
    /// changes unless every read succeeds; records rolled by a failed load
    /// are left in the log unreferenced.
    fn load_slot(&mut self) -> Result<(), TimerError> {
        let time = self.cursor_ms;
        let index = self.wheel.index(time);
        let Some(slot) = self.wheel.get(index).copied() else {
            return Err(TimerError::invariant(format!("no slot {index}")));
        };
        if slot.chain.count > 0 && slot.time_ms != time {
            return Err(TimerError::invariant(format!(
                "slot {index} holds time {}, the cursor is at {time}",
                slot.time_ms
            )));
        }
        let end = time + self.wheel.slot_ms();
        let mut entries = BTreeSet::new();
        let mut rolled = ChainRef::default();
        let mut duplicates = Vec::new();
        let mut cancelled: Vec<TimerEntry> = Vec::new();
        let mut walk = ChainWalk::new(slot.chain);
        while let Some(e) = walk.next(&self.log, &mut self.cache, &self.dir)? {
            self.check_in_slot(&e, time)?;
            if e.due_ms < end {
                if !entries.insert(e) {
                    duplicates.push(e);
                }
            } else if self.is_cancelled(&e) {
                cancelled.push(e);
            } else {
                let pos = self.log.append(&Record {
                    entry: e,
                    prev: rolled.tail(),
                })?;
                rolled.push(pos);
            }
        }
        for e in &cancelled {
            self.take_cancel(e);
        }
        for e in duplicates.iter().chain(&cancelled) {
            self.forget(e)?;
        }
        let next = Slot {
            time_ms: time + self.wheel.revolution_ms(),
            chain: rolled,
        };
        if let Some(s) = self.wheel.get_mut(index) {
            *s = next;
        }
        self.hand_high_water = self.hand_high_water.max(entries.len());
        self.hand = Some(Hand {
            time_ms: time,
            chain: slot.chain,
            entries,
        });
        Ok(())
    }

    /// An entry read from the chain of the slot of time `time` must belong
    /// to it: due in its span, or in the same slot of a later revolution.
    fn check_in_slot(&self, e: &TimerEntry, time: i64) -> Result<(), TimerError> {
        let in_span = e.due_ms < time + self.wheel.slot_ms();
        if e.due_ms < time || (!in_span && self.wheel.index(e.due_ms) != self.wheel.index(time)) {
            return Err(TimerError::corrupt(
                self.dir.display(),
                format!("entry {e:?} found in the chain of the slot of time {time}"),
            ));
        }
        Ok(())
    }

    /// Cancel the pending entry of this record: it will not be handed out.
    /// The cancel waits until the entry is met (its slot loaded, or its
    /// turn in hand), when the counts drop; at most
    /// [`Self::CANCELS_MAX`] wait at once ([`TimerError::TooManyCancels`]).
    /// Returns false, changing nothing, when the partition has no entry
    /// pending (nothing to cancel). Like an add, not durable until the next
    /// checkpoint.
    pub fn cancel(
        &mut self,
        topic_id: Uuid,
        partition: i32,
        offset: i64,
    ) -> Result<bool, TimerError> {
        self.refuse_if_poisoned()?;
        let key = (topic_id, partition);
        if !self.pending.contains_key(&key) {
            return Ok(false);
        }
        if self.cancels.get(&key).is_some_and(|s| s.contains(&offset)) {
            return Ok(true);
        }
        if self.cancels_total >= self.cancels_max {
            return Err(TimerError::TooManyCancels {
                limit: self.cancels_max,
            });
        }
        self.cancels.entry(key).or_default().insert(offset);
        self.cancels_total += 1;
        Ok(true)
    }

    /// Make everything so far durable and recoverable: fdatasync the log to
    /// its end, write the checkpoint (with the caller's `progress` map,
    /// handed back by the next [`Self::open`]) atomically, then delete the
    /// log segments it no longer needs.
    ///
    /// Contract: call it only once everything `poll` returned so far is
    /// durably delivered. After a crash the store reopens at the last
    /// checkpoint: entries handed out after it are handed out again (the
    /// caller deduplicates), entries added or cancelled after it must be
    /// added or cancelled again by the caller. A failed write or fsync
    /// poisons the store; the checkpoint on disk is then the previous one.
    /// A segment that cannot be removed afterwards is logged, not an error
    /// (the checkpoint is in place); a later checkpoint removes it.
    pub fn checkpoint(&mut self, progress: &[(Uuid, i32, i64)]) -> Result<(), TimerError> {
        self.refuse_if_poisoned()?;
        if progress.len() > PROGRESS_MAX {
            return Err(TimerError::TooMuchProgress {
                len: progress.len(),
                max: PROGRESS_MAX,
            });
        }
        let result = self.checkpoint_inner(progress);
        self.settle(result)
    }

    fn checkpoint_inner(&mut self, progress: &[(Uuid, i32, i64)]) -> Result<(), TimerError> {
        let in_hand = self.hand.as_ref().map_or(0, |h| h.entries.len() as u64);
        let by_partition: u64 = self.pending.values().sum();
        if self.pending_total != self.wheel.records().saturating_add(in_hand)
            || by_partition != self.pending_total
        {
            return Err(TimerError::invariant(format!(
                "{} entries pending ({by_partition} by partition), but the chains hold {} \
                 records and the hand {in_hand}",
                self.pending_total,
                self.wheel.records()
            )));
        }
        self.log.sync()?;
        let bytes = self.snapshot(progress).encode();
        let tmp = self.dir.join(CHECKPOINT_TMP_FILE);
        let path = self.dir.join(CHECKPOINT_FILE);
        let io = self.io.as_ref();
        let steps = [
            "storage::timer_checkpoint_sync",
            "storage::timer_checkpoint_rename",
            "storage::timer_checkpoint_dir_sync",
        ];
        let written =
            durable::replace_file(io, steps, &tmp, &path, |f| io.write_all_at(f, &bytes, 0));
        if let Err(e) = written {
            let error = TimerError::io(
                format!(
                    "writing the timer checkpoint: {} {}",
                    e.step,
                    e.path.display()
                ),
                e.source,
            );
            self.poisoned = Some(error.to_string().into());
            return Err(error);
        }
        // The checkpoint is in place: a segment that cannot be removed now
        // is only disk space, removed by a later checkpoint or open.
        let keep_from = self.lowest_needed().unwrap_or(self.log.end());
        if let Err(e) = self.log.delete_below(keep_from) {
            tracing::warn!(error = %e, "cannot remove a timer log segment no checkpoint needs");
        }
        Ok(())
    }

    /// The checkpoint of the store as it is.
    fn snapshot(&self, progress: &[(Uuid, i32, i64)]) -> Checkpoint {
        let mut pending: Vec<(Uuid, i32, u64)> =
            self.pending.iter().map(|(k, n)| (k.0, k.1, *n)).collect();
        pending.sort_unstable();
        let mut cancels: Vec<(Uuid, i32, i64)> = self
            .cancels
            .iter()
            .flat_map(|(k, offsets)| offsets.iter().map(|o| (k.0, k.1, *o)))
            .collect();
        cancels.sort_unstable();
        Checkpoint {
            slot_ms: self.wheel.slot_ms(),
            slots: self.wheel.len(),
            cursor_ms: self.cursor_ms,
            log_end: self.log.end(),
            last_returned: self.last_returned,
            hand: self.hand.as_ref().map(|h| HandRef {
                time_ms: h.time_ms,
                chain: h.chain,
                remaining: h.entries.len() as u64,
            }),
            used_slots: self.wheel.used().map(|(i, s)| (i as u32, *s)).collect(),
            pending,
            cancels,
            progress: progress.to_vec(),
        }
    }

    /// The lowest log position a chain (of the wheel or in hand) needs.
    fn lowest_needed(&self) -> Option<u64> {
        let hand = self.hand.as_ref().and_then(|h| h.chain.lowest());
        [self.wheel.lowest_position(), hand]
            .into_iter()
            .flatten()
            .min()
    }

    /// The earliest pending entries that `filter` accepts (at most
    /// `max_results`, by due time), reading at most `max_reads` log records;
    /// changes nothing. The set in hand costs no reads; then chains are read
    /// slot by slot in the order they come due. For tools: "the pending
    /// records of topic X", "when is topic X next due".
    pub fn scan(
        &self,
        filter: impl Fn(&TimerEntry) -> bool,
        max_results: usize,
        max_reads: u64,
    ) -> Result<ScanResult, TimerError> {
        self.scan_slots(filter, max_results, max_reads, false)
    }

    /// The earliest pending entries that `filter` accepts (at most
    /// `max_results`, by due time), like [`Self::scan`] but stopping at
    /// the first slot that can hold none earlier than those found: an
    /// entry is never due before its slot's time. `matched` then counts
    /// only the entries met; `complete` says the answer is exact (the
    /// entries found are the earliest), not that every entry was read.
    pub fn earliest(
        &self,
        filter: impl Fn(&TimerEntry) -> bool,
        max_results: usize,
        max_reads: u64,
    ) -> Result<ScanResult, TimerError> {
        self.scan_slots(filter, max_results, max_reads, true)
    }

    /// Whether the record `(topic_id, partition, offset)` has an entry
    /// pending (added, not handed out, not cancelled), due at `due_ms` when
    /// it was added. Reads the chains that can hold it: its slot's, and
    /// the cursor's (where an entry added late was placed).
    pub fn contains(
        &self,
        topic_id: Uuid,
        partition: i32,
        offset: i64,
        due_ms: i64,
    ) -> Result<bool, TimerError> {
        let is_it = |e: &TimerEntry| {
            e.topic_id == topic_id && e.partition == partition && e.offset == offset
        };
        let probe = TimerEntry {
            due_ms,
            topic_id,
            partition,
            offset,
        };
        if self.is_cancelled(&probe) || !self.pending.contains_key(&(topic_id, partition)) {
            return Ok(false);
        }
        if self.hand.iter().flat_map(|h| &h.entries).any(is_it) {
            return Ok(true);
        }
        let mut indexes = vec![self.wheel.index(due_ms.max(self.floor()))];
        let cursor = self.wheel.index(self.floor());
        if !indexes.contains(&cursor) {
            indexes.push(cursor);
        }
        let mut cache = ReadCache::default();
        for index in indexes {
            let Some(slot) = self.wheel.get(index) else {
                continue;
            };
            let mut walk = ChainWalk::new(slot.chain);
            while let Some(e) = walk.next(&self.log, &mut cache, &self.dir)? {
                if is_it(&e) {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    fn scan_slots(
        &self,
        filter: impl Fn(&TimerEntry) -> bool,
        max_results: usize,
        max_reads: u64,
        stop_early: bool,
    ) -> Result<ScanResult, TimerError> {
        let mut found = Earliest::new(max_results);
        let mut matched = 0u64;
        let mut take = |found: &mut Earliest, e: &TimerEntry| {
            if filter(e) && !self.is_cancelled(e) {
                matched += 1;
                found.offer(*e);
            }
        };
        for e in self.hand.iter().flat_map(|h| &h.entries) {
            take(&mut found, e);
        }
        let mut slots: Vec<&Slot> = self.wheel.used().map(|(_, s)| s).collect();
        slots.sort_by_key(|s| s.time_ms);
        let mut cache = ReadCache::default();
        let mut reads = 0u64;
        let mut complete = true;
        'slots: for slot in slots {
            let none_earlier =
                found.is_full() && found.latest().is_some_and(|e| e.due_ms < slot.time_ms);
            if stop_early && none_earlier {
                break;
            }
            let mut walk = ChainWalk::new(slot.chain);
            loop {
                if reads >= max_reads && walk.has_next() {
                    complete = false;
                    break 'slots;
                }
                let Some(e) = walk.next(&self.log, &mut cache, &self.dir)? else {
                    break;
                };
                reads += 1;
                take(&mut found, &e);
            }
        }
        Ok(ScanResult {
            entries: found.into_sorted(),
            matched,
            complete,
        })
    }

    /// Entries pending (added, not yet handed out or met as cancelled).
    pub fn pending(&self) -> u64 {
        self.pending_total
    }

    /// Entries pending of the topic `topic_id`.
    pub fn pending_in(&self, topic_id: Uuid) -> u64 {
        self.pending
            .iter()
            .filter(|(k, _)| k.0 == topic_id)
            .map(|(_, n)| n)
            .sum()
    }

    /// Entries pending of one partition.
    pub fn pending_in_partition(&self, topic_id: Uuid, partition: i32) -> u64 {
        self.pending
            .get(&(topic_id, partition))
            .copied()
            .unwrap_or(0)
    }

    /// Cancels of one partition waiting to meet their entries: those
    /// entries still count in [`Self::pending_in_partition`].
    pub fn cancels_in_partition(&self, topic_id: Uuid, partition: i32) -> usize {
        self.cancels
            .get(&(topic_id, partition))
            .map_or(0, |s| s.len())
    }

    /// Cancels waiting to meet their entries.
    pub fn cancels_outstanding(&self) -> usize {
        self.cancels_total
    }

    /// Start of the slot processed next (or in hand).
    pub fn cursor_ms(&self) -> i64 {
        self.cursor_ms
    }

    /// The largest the set in hand has been since the store was opened.
    #[cfg(test)]
    fn hand_high_water(&self) -> usize {
        self.hand_high_water
    }

    /// Segment files of the schedule log.
    #[cfg(test)]
    fn segment_count(&self) -> usize {
        self.log.segment_count()
    }

    /// The floor of due times: the last one handed out, or the cursor.
    fn floor(&self) -> i64 {
        self.last_returned
            .map_or(self.cursor_ms, |w| w.due_ms.max(self.cursor_ms))
    }

    fn is_cancelled(&self, e: &TimerEntry) -> bool {
        self.cancels
            .get(&(e.topic_id, e.partition))
            .is_some_and(|s| s.contains(&e.offset))
    }

    /// Remove the cancel of `e`'s record; whether there was one.
    fn take_cancel(&mut self, e: &TimerEntry) -> bool {
        let key = (e.topic_id, e.partition);
        let Some(set) = self.cancels.get_mut(&key) else {
            return false;
        };
        let found = set.remove(&e.offset);
        if found {
            self.cancels_total -= 1;
            if set.is_empty() {
                self.cancels.remove(&key);
            }
        }
        found
    }

    /// Count `e` as no longer pending. A partition left with none forgets
    /// its outstanding cancels: nothing is left for them to meet.
    fn forget(&mut self, e: &TimerEntry) -> Result<(), TimerError> {
        let key = (e.topic_id, e.partition);
        let Some(count) = self.pending.get_mut(&key).filter(|n| **n > 0) else {
            return Err(TimerError::invariant(format!(
                "entry {e:?} met, but its partition has no entry pending"
            )));
        };
        *count -= 1;
        if *count == 0 {
            self.pending.remove(&key);
            if let Some(set) = self.cancels.remove(&key) {
                self.cancels_total -= set.len();
            }
        }
        self.pending_total = self.pending_total.saturating_sub(1);
        Ok(())
    }

    fn refuse_if_poisoned(&self) -> Result<(), TimerError> {
        match self.poisoned.as_ref().or(self.log.poisoned()) {
            Some(reason) => Err(TimerError::Poisoned {
                reason: Arc::clone(reason),
            }),
            None => Ok(()),
        }
    }

    /// Poison the store on a failure it must not carry on from.
    fn settle<T>(&mut self, result: Result<T, TimerError>) -> Result<T, TimerError> {
        if let Err(e) = &result
            && e.poisons()
            && self.poisoned.is_none()
        {
            tracing::error!(error = %e, "timer store poisoned");
            self.poisoned = Some(e.to_string().into());
        }
        result
    }
}

impl std::fmt::Debug for TimerStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TimerStore")
            .field("dir", &self.dir)
            .field("cursor_ms", &self.cursor_ms)
            .field("pending", &self.pending_total)
            .field("in_hand", &self.hand.as_ref().map(|h| h.entries.len()))
            .field("log_end", &self.log.end())
            .field("poisoned", &self.poisoned)
            .finish_non_exhaustive()
    }
}

/// A walk of one chain, newest record first, checking that it holds
/// exactly its count and ends at its first position.
struct ChainWalk {
    chain: ChainRef,
    next: Option<u64>,
    read: u64,
}

impl ChainWalk {
    fn new(chain: ChainRef) -> Self {
        Self {
            chain,
            next: chain.tail(),
            read: 0,
        }
    }

    fn has_next(&self) -> bool {
        self.next.is_some()
    }

    /// The next entry of the chain, or `None` past its first.
    fn next(
        &mut self,
        log: &ScheduleLog,
        cache: &mut ReadCache,
        dir: &Path,
    ) -> Result<Option<TimerEntry>, TimerError> {
        let Some(pos) = self.next else {
            return Ok(None);
        };
        let record = log.read(pos, cache)?;
        self.read += 1;
        let chain = self.chain;
        let broken = |detail: String| {
            TimerError::corrupt(
                dir.display(),
                format!("chain {chain:?} at position {pos}: {detail}"),
            )
        };
        self.next = match record.prev {
            None if self.read == chain.count && pos == chain.first => None,
            None => return Err(broken(format!("ends after {} records", self.read))),
            Some(_) if self.read >= chain.count => {
                return Err(broken("goes on past its count".into()));
            }
            Some(prev) if prev >= pos || prev < chain.first => {
                return Err(broken(format!("names previous position {prev}")));
            }
            Some(prev) => Some(prev),
        };
        Ok(Some(record.entry))
    }
}

/// The `max` smallest entries offered.
struct Earliest {
    max: usize,
    heap: BinaryHeap<TimerEntry>,
}

impl Earliest {
    fn new(max: usize) -> Self {
        Self {
            max,
            heap: BinaryHeap::new(),
        }
    }

    fn offer(&mut self, e: TimerEntry) {
        if self.heap.len() < self.max {
            self.heap.push(e);
        } else if self.heap.peek().is_some_and(|top| e < *top) {
            self.heap.pop();
            self.heap.push(e);
        }
    }

    fn is_full(&self) -> bool {
        self.heap.len() >= self.max
    }

    /// The latest entry kept.
    fn latest(&self) -> Option<&TimerEntry> {
        self.heap.peek()
    }

    fn into_sorted(self) -> Vec<TimerEntry> {
        self.heap.into_sorted_vec()
    }
}

fn check_config(config: &TimerConfig) -> Result<(), TimerError> {
    let invalid = |detail: String| Err(TimerError::InvalidConfig { detail });
    if config.slot_ms < 1 {
        return invalid(format!("slot_ms is {}, at least 1", config.slot_ms));
    }
    if config.slots < 1 || config.slots > SLOTS_MAX {
        return invalid(format!("slots is {}, 1 ..= {SLOTS_MAX}", config.slots));
    }
    if config.slot_ms.saturating_mul(i64::from(config.slots)) > REVOLUTION_MS_MAX {
        return invalid(format!(
            "a revolution (slot_ms {} x slots {}) is longer than {REVOLUTION_MS_MAX} ms",
            config.slot_ms, config.slots
        ));
    }
    Ok(())
}

fn check_time(now_ms: i64) -> Result<(), TimerError> {
    if !(0..=TimerStore::TIME_MS_MAX).contains(&now_ms) {
        return Err(TimerError::ClockOutOfRange {
            now_ms,
            max_ms: TimerStore::TIME_MS_MAX,
        });
    }
    Ok(())
}

/// The checkpoint in `dir`, if there is one; refused if it is of another
/// magic or version, damaged, or of another wheel than `config`.
fn read_checkpoint(
    dir: &Path,
    io: &dyn FileIo,
    config: &TimerConfig,
) -> Result<Option<Checkpoint>, TimerError> {
    let path = dir.join(CHECKPOINT_FILE);
    let file = path.display().to_string();
    let len = match io.metadata(&path) {
        Ok(meta) => meta.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(TimerError::io(format!("reading {file}"), e)),
    };
    if len > CHECKPOINT_BYTES_MAX {
        let detail = format!("{len} bytes, more than a checkpoint can hold");
        return Err(TimerError::Corrupt { file, detail });
    }
    let bytes = io
        .read(&path)
        .map_err(|e| TimerError::io(format!("reading {file}"), e))?;
    let what = "timer checkpoint";
    let checkpoint = match Checkpoint::decode(&bytes) {
        Ok(c) => c,
        Err(DecodeError::Magic(found)) => {
            return Err(TimerError::UnknownMagic {
                file,
                what,
                expected: show_bytes(&CHECKPOINT_MAGIC),
                found: show_bytes(&found),
            });
        }
        Err(DecodeError::Version(found)) => {
            return Err(TimerError::UnsupportedVersion {
                file,
                what,
                found,
                supported: CHECKPOINT_VERSION,
            });
        }
        Err(DecodeError::Corrupt(detail)) => return Err(TimerError::Corrupt { file, detail }),
    };
    if checkpoint.slot_ms != config.slot_ms || checkpoint.slots != config.slots {
        return Err(TimerError::ConfigMismatch {
            file,
            stored_slot_ms: checkpoint.slot_ms,
            stored_slots: checkpoint.slots,
            slot_ms: config.slot_ms,
            slots: config.slots,
        });
    }
    Ok(Some(checkpoint))
}
