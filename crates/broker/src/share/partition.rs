//! One share-partition (KIP-932): what one share group has done with one
//! topic partition, as a state machine that takes requests and the time and
//! says what to persist and what to dead-letter. It reads and writes
//! nothing itself.
//!
//! The share-partition start offset (SPSO) is the first offset the group is
//! not done with. Every offset from it up to the end offset (SPEO, the first
//! offset never acquired) has a slot: available (perhaps not before a
//! backoff ends), acquired by a member until its lock expires,
//! acknowledged, or archived. Offsets past the SPEO are available and have
//! no slot. The span from SPSO to SPEO is bounded
//! (`group.share.partition.max.record.locks`), so memory is too: a share
//! partition never acquires past it until the start offset moves.
//!
//! A record is delivered at most `group.share.delivery.count.limit` times.
//! One released (or whose lock expired) at that count, and one rejected, is
//! archived and handed to the dead-letter writer: it stays in the
//! dead-lettering state, holding the start offset back, until the writer
//! confirms the dead letter is durable. The persisted state keeps that
//! state, so a crash between the two writes is resolved at load by looking
//! for the dead letter, and each record is dead-lettered exactly once.
//!
//! Acquisitions are not persisted: after a restart or a failover, records
//! that were acquired are available again with the delivery count of the
//! last persisted state, as in Kafka.

use std::collections::VecDeque;
use std::sync::Arc;

use kafka_protocol::ResponseError;

/// How a member acknowledges records (ShareFetch and ShareAcknowledge's
/// `acknowledge_types`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AckType {
    /// An offset that holds no record (a gap the client saw in a batch).
    Gap,
    /// Processed: the record is done.
    Accept,
    /// Not processed: deliver the record again.
    Release,
    /// Not processable: archive the record and dead-letter it.
    Reject,
    /// Still being processed: the lock is renewed (KIP-1222).
    Renew,
}

impl AckType {
    /// The type a wire code names, if any.
    pub(crate) fn from_code(code: i8) -> Option<Self> {
        match code {
            0 => Some(Self::Gap),
            1 => Some(Self::Accept),
            2 => Some(Self::Release),
            3 => Some(Self::Reject),
            4 => Some(Self::Renew),
            _ => None,
        }
    }
}

/// Why a record was archived and dead-lettered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ArchiveReason {
    /// A member rejected it.
    Rejected,
    /// It was released (or its lock expired) at the delivery count limit.
    DeliveryLimit,
}

/// The state of one offset between the start and end offsets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SlotState {
    /// May be acquired, once the time is `at_ms` or later (a redelivery
    /// backoff; `i64::MIN` when there is none).
    Available { at_ms: i64 },
    /// Held by `member` until `deadline_ms`.
    Acquired { member: Arc<str>, deadline_ms: i64 },
    /// Done: accepted by a member.
    Acknowledged,
    /// Done without a dead letter: a gap, a control record, or a record
    /// whose dead letter is durable.
    Archived,
    /// Archived, with its dead letter not yet confirmed durable; since
    /// `since_ms` (a dead letter written for it is no older).
    DeadLettering {
        reason: ArchiveReason,
        since_ms: i64,
    },
}

impl SlotState {
    fn done(&self) -> bool {
        matches!(self, Self::Acknowledged | Self::Archived)
    }
}

/// One offset's slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Slot {
    pub state: SlotState,
    /// How often the record has been acquired.
    pub delivery_count: u16,
}

/// The settings of a share group that its partitions act on (group configs,
/// or the broker's defaults).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ShareSettings {
    /// `group.share.record.lock.duration.ms`.
    pub record_lock_duration_ms: i64,
    /// `group.share.delivery.count.limit`.
    pub delivery_count_limit: u16,
    /// `group.share.partition.max.record.locks`: the most offsets from the
    /// start offset to the end offset.
    pub max_record_locks: u32,
    /// `weir.share.redelivery.backoff.ms`: the wait before the n-th
    /// redelivery is entry n-1 (the last entry repeats); empty means none.
    pub redelivery_backoff_ms: Vec<i64>,
}

impl Default for ShareSettings {
    fn default() -> Self {
        Self {
            record_lock_duration_ms: 30_000,
            delivery_count_limit: 5,
            max_record_locks: 2_000,
            redelivery_backoff_ms: Vec::new(),
        }
    }
}

impl ShareSettings {
    /// The wait before a record delivered `delivery_count` times is
    /// available again.
    fn backoff_ms(&self, delivery_count: u16) -> i64 {
        let i = usize::from(delivery_count.max(1) - 1);
        self.redelivery_backoff_ms
            .get(i)
            .or(self.redelivery_backoff_ms.last())
            .copied()
            .unwrap_or(0)
    }
}

/// A batch a fetch read from the partition, as acquisition sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FetchedBatch {
    pub base_offset: i64,
    pub last_offset: i64,
    /// A transaction marker: its offset is archived, never acquired.
    pub control: bool,
    /// The offsets that hold records, when not every offset of the batch
    /// does (compaction, or hidden delayed records, left gaps); `None`
    /// when every offset does.
    pub present: Option<Vec<i64>>,
}

impl FetchedBatch {
    fn holds(&self, offset: i64) -> bool {
        (self.base_offset..=self.last_offset).contains(&offset)
            && self
                .present
                .as_ref()
                .is_none_or(|p| p.binary_search(&offset).is_ok())
    }
}

/// Offsets acquired by one fetch: ranges with one delivery count each, in
/// offset order (ShareFetch's `acquired_records`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Acquired {
    pub ranges: Vec<AcquiredRange>,
    /// Records acquired in all.
    pub records: u32,
    /// Records found already delivered `group.share.delivery.count.limit`
    /// times (acquired when the broker stopped, their count persisted):
    /// archived for the dead-letter writer instead of acquired again.
    pub changes: Changes,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AcquiredRange {
    pub first_offset: i64,
    pub last_offset: i64,
    pub delivery_count: u16,
}

impl Acquired {
    fn push(&mut self, offset: i64, delivery_count: u16) {
        self.records += 1;
        if let Some(last) = self.ranges.last_mut()
            && last.last_offset + 1 == offset
            && last.delivery_count == delivery_count
        {
            last.last_offset = offset;
            return;
        }
        self.ranges.push(AcquiredRange {
            first_offset: offset,
            last_offset: offset,
            delivery_count,
        });
    }
}

/// One acknowledgement batch of a request: offsets `first..=last`, with
/// one type for all of them or one per offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AckBatch {
    pub first_offset: i64,
    pub last_offset: i64,
    pub types: Vec<AckType>,
}

/// A record archived for the dead-letter writer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DeadLetter {
    pub offset: i64,
    pub delivery_count: u16,
    pub reason: ArchiveReason,
    /// When the record was archived for it: its dead letter, if written,
    /// carries this timestamp or a later one.
    pub since_ms: i64,
}

/// What a change asks of the caller.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Changes {
    /// The durable state changed: persist [`SharePartition::persisted`]
    /// before answering the request that made the change.
    pub persist: bool,
    /// Records to write to the dead-letter topic, then confirm with
    /// [`SharePartition::dead_lettered`].
    pub dead_letters: Vec<DeadLetter>,
}

impl Changes {
    fn merge(&mut self, other: Changes) {
        self.persist |= other.persist;
        self.dead_letters.extend(other.dead_letters);
    }
}

/// A run of offsets with one persisted state and delivery count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StateBatch {
    pub first_offset: i64,
    pub last_offset: i64,
    pub state: PersistedState,
    pub delivery_count: u16,
}

/// A slot's state as it is persisted: an acquired record is persisted as
/// available.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PersistedState {
    Available,
    Acknowledged,
    Archived,
    DeadLettering {
        reason: ArchiveReason,
        since_ms: i64,
    },
}

/// The durable part of a share-partition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct PersistedPartition {
    pub start_offset: i64,
    /// Runs covering the slots from the start offset, in order; offsets
    /// between runs and past the last are available with no deliveries.
    pub batches: Vec<StateBatch>,
}

/// What a share-partition has in flight.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InFlight {
    /// The share-partition start offset: the first offset not done.
    pub start_offset: i64,
    /// The end offset: the first offset never acquired.
    pub end_offset: i64,
    /// Records held by a member under a lock.
    pub acquired: u64,
    /// Records delivered before and available again now.
    pub redeliverable: u64,
    /// Records delivered before, waiting out their redelivery backoff.
    pub backing_off: u64,
    /// Records given up on whose dead letters are not confirmed yet.
    pub dead_lettering: u64,
    /// Of those records, how many have each delivery count.
    pub delivery_counts: std::collections::BTreeMap<u16, u64>,
}

/// One share-partition's state.
#[derive(Debug, Clone)]
pub(crate) struct SharePartition {
    /// The share-partition start offset (SPSO).
    start: i64,
    /// Slot `i` is offset `start + i`; the end offset (SPEO) is
    /// `start + slots.len()`.
    slots: VecDeque<Slot>,
    /// Its group was deleted, or (on a cluster) this broker stopped
    /// leading its partition: nothing of it may be written again.
    retired: bool,
    /// The leader epoch of its topic partition when this broker took it
    /// up: a cluster's share coordinator fences writes by it.
    leader_epoch: i32,
    /// No lock expires before this time (`i64::MAX`: none is held). Kept
    /// low rather than exact, so a look at whether locks are due is cheap.
    locks_due_ms: i64,
}

impl SharePartition {
    /// A share-partition that starts at `start_offset` (from
    /// `share.auto.offset.reset` or an admin's reset) with nothing in flight.
    pub(crate) fn new(start_offset: i64) -> Self {
        Self {
            start: start_offset,
            slots: VecDeque::new(),
            retired: false,
            leader_epoch: -1,
            locks_due_ms: i64::MAX,
        }
    }

    /// Taken up by the leader of its partition at `epoch`.
    pub(crate) fn led_at(mut self, epoch: i32) -> Self {
        self.leader_epoch = epoch;
        self
    }

    pub(crate) fn leader_epoch(&self) -> i32 {
        self.leader_epoch
    }

    /// Start afresh at `offset` (an admin altered the group's offsets):
    /// nothing is in flight, no record has been delivered.
    pub(crate) fn reset_to(&mut self, offset: i64) {
        self.start = offset;
        self.slots.clear();
        self.locks_due_ms = i64::MAX;
    }

    /// Its group was deleted: a fetch that still holds it must not write
    /// its state after the tombstone.
    pub(crate) fn retire(&mut self) {
        self.retired = true;
    }

    pub(crate) fn is_retired(&self) -> bool {
        self.retired
    }

    /// A share-partition as it was persisted.
    pub(crate) fn from_persisted(p: &PersistedPartition) -> Self {
        let mut me = Self::new(p.start_offset);
        for b in &p.batches {
            for offset in b.first_offset.max(me.start)..=b.last_offset {
                let state = match b.state {
                    PersistedState::Available => SlotState::Available { at_ms: i64::MIN },
                    PersistedState::Acknowledged => SlotState::Acknowledged,
                    PersistedState::Archived => SlotState::Archived,
                    PersistedState::DeadLettering { reason, since_ms } => {
                        SlotState::DeadLettering { reason, since_ms }
                    }
                };
                me.set(
                    offset,
                    Slot {
                        state,
                        delivery_count: b.delivery_count,
                    },
                );
            }
        }
        me.advance();
        me
    }

    /// The start offset (SPSO).
    pub(crate) fn start_offset(&self) -> i64 {
        self.start
    }

    /// The end offset (SPEO): the first offset never acquired.
    pub(crate) fn end_offset(&self) -> i64 {
        self.start + self.slots.len() as i64
    }

    /// The slot of `offset`, if it is between the start and end offsets.
    pub(crate) fn slot(&self, offset: i64) -> Option<&Slot> {
        let i = usize::try_from(offset.checked_sub(self.start)?).ok()?;
        self.slots.get(i)
    }

    fn slot_mut(&mut self, offset: i64) -> Option<&mut Slot> {
        let i = usize::try_from(offset.checked_sub(self.start)?).ok()?;
        self.slots.get_mut(i)
    }

    /// Set `offset`'s slot, growing the window with available slots up to it.
    fn set(&mut self, offset: i64, slot: Slot) {
        let Ok(i) = usize::try_from(offset - self.start) else {
            return;
        };
        while self.slots.len() <= i {
            self.slots.push_back(Slot {
                state: SlotState::Available { at_ms: i64::MIN },
                delivery_count: 0,
            });
        }
        self.slots[i] = slot;
    }

    /// Move the start offset past the slots that are done.
    fn advance(&mut self) {
        while self.slots.front().is_some_and(|s| s.state.done()) {
            self.slots.pop_front();
            self.start += 1;
        }
    }

    /// What is in flight, for operators.
    pub(crate) fn summary(&self, now_ms: i64) -> InFlight {
        let mut out = InFlight {
            start_offset: self.start,
            end_offset: self.end_offset(),
            ..InFlight::default()
        };
        for slot in &self.slots {
            match &slot.state {
                SlotState::Acquired { .. } => out.acquired += 1,
                SlotState::Available { at_ms } if slot.delivery_count > 0 => {
                    if *at_ms > now_ms {
                        out.backing_off += 1;
                    } else {
                        out.redeliverable += 1;
                    }
                }
                SlotState::DeadLettering { .. } => out.dead_lettering += 1,
                _ => continue,
            }
            *out.delivery_counts.entry(slot.delivery_count).or_default() += 1;
        }
        out
    }

    /// Records acquired now, by any member.
    #[cfg(test)]
    pub(crate) fn acquired_count(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| matches!(s.state, SlotState::Acquired { .. }))
            .count()
    }

    /// Where a fetch should read from at `now_ms`: the first offset that
    /// may be acquired (an available slot whose backoff is over, or the end
    /// offset if the window has room), or `None` when nothing can be.
    pub(crate) fn next_fetch_offset(&self, now_ms: i64, s: &ShareSettings) -> Option<i64> {
        let redelivery = self.slots.iter().position(
            |slot| matches!(slot.state, SlotState::Available { at_ms } if at_ms <= now_ms),
        );
        match redelivery {
            Some(i) => Some(self.start + i as i64),
            None if self.slots.len() < s.max_record_locks as usize => Some(self.end_offset()),
            None => None,
        }
    }

    /// The earliest time something here changes by itself: a lock expires
    /// or a backoff ends.
    pub(crate) fn next_deadline_ms(&self) -> Option<i64> {
        self.slots
            .iter()
            .filter_map(|slot| match &slot.state {
                SlotState::Acquired { deadline_ms, .. } => Some(*deadline_ms),
                SlotState::Available { at_ms } if *at_ms != i64::MIN => Some(*at_ms),
                _ => None,
            })
            .min()
    }

    /// Whether a lock may have expired by `now_ms` (when not, the locks
    /// need no look).
    pub(crate) fn locks_due(&self, now_ms: i64) -> bool {
        self.locks_due_ms <= now_ms
    }

    /// Acquire for `member` up to `max_records` records of `batches` (read
    /// from the partition at [`Self::next_fetch_offset`], in offset order):
    /// available slots whose backoff is over, and offsets past the end
    /// offset while the window has room. Offsets of a batch that hold no
    /// record, and control records, are archived as they are passed.
    pub(crate) fn acquire(
        &mut self,
        member: &Arc<str>,
        batches: &[FetchedBatch],
        max_records: u32,
        now_ms: i64,
        s: &ShareSettings,
    ) -> Acquired {
        let mut out = Acquired::default();
        let deadline_ms = now_ms.saturating_add(s.record_lock_duration_ms);
        'batches: for b in batches {
            for offset in b.base_offset.max(self.start)..=b.last_offset {
                if out.records >= max_records {
                    break 'batches;
                }
                let end = self.end_offset();
                if offset > end {
                    // A gap between batches (records gone from the log):
                    // nothing there to deliver.
                    for gap in end..offset {
                        if self.slots.len() >= s.max_record_locks as usize {
                            break 'batches;
                        }
                        self.set(gap, archived(0));
                    }
                }
                if offset == self.end_offset() {
                    if self.slots.len() >= s.max_record_locks as usize {
                        break 'batches;
                    }
                    self.set(offset, available(0));
                }
                let Some(slot) = self.slot_mut(offset) else {
                    continue;
                };
                if !matches!(slot.state, SlotState::Available { at_ms } if at_ms <= now_ms) {
                    continue;
                }
                if b.control || !b.holds(offset) {
                    slot.state = SlotState::Archived;
                    continue;
                }
                if slot.delivery_count >= s.delivery_count_limit {
                    let dead = dead_letter(offset, slot, ArchiveReason::DeliveryLimit, now_ms);
                    out.changes.merge(dead);
                    continue;
                }
                slot.delivery_count = slot.delivery_count.saturating_add(1);
                slot.state = SlotState::Acquired {
                    member: member.clone(),
                    deadline_ms,
                };
                out.push(offset, slot.delivery_count);
            }
        }
        if out.records > 0 {
            self.locks_due_ms = self.locks_due_ms.min(deadline_ms);
        }
        self.advance();
        out
    }

    /// Apply `member`'s acknowledgements. All of them are checked first:
    /// every offset must be acquired by `member` (a gap may also be
    /// archived already), else nothing changes and the answer is
    /// INVALID_RECORD_STATE.
    pub(crate) fn acknowledge(
        &mut self,
        member: &str,
        batches: &[AckBatch],
        now_ms: i64,
        s: &ShareSettings,
    ) -> Result<Changes, ResponseError> {
        for b in batches {
            let span = b.last_offset.checked_sub(b.first_offset).map(|d| d + 1);
            let Some(span) = span.filter(|n| *n > 0) else {
                return Err(ResponseError::InvalidRequest);
            };
            if b.types.len() != 1 && b.types.len() as i64 != span {
                return Err(ResponseError::InvalidRequest);
            }
            // Offsets below the start offset are done: only gaps may be
            // acknowledged there, and nothing past the end offset. Both are
            // checked without walking the range, which the client chose.
            if b.first_offset < self.start {
                let below = usize::try_from(self.start - b.first_offset).unwrap_or(usize::MAX);
                if !b.types.iter().take(below).all(|t| *t == AckType::Gap) {
                    return Err(ResponseError::InvalidRecordState);
                }
            }
            if b.last_offset >= self.end_offset() {
                return Err(ResponseError::InvalidRecordState);
            }
            for (offset, ack) in acks(b, self.start) {
                let ok = match self.slot(offset).map(|s| &s.state) {
                    Some(SlotState::Acquired { member: m, .. }) => &**m == member,
                    Some(SlotState::Archived) => ack == AckType::Gap,
                    _ => false,
                };
                if !ok {
                    return Err(ResponseError::InvalidRecordState);
                }
            }
        }
        let mut changes = Changes::default();
        for b in batches {
            for (offset, ack) in acks(b, self.start) {
                changes.merge(self.apply(offset, ack, now_ms, s));
            }
        }
        self.advance();
        Ok(changes)
    }

    fn apply(&mut self, offset: i64, ack: AckType, now_ms: i64, s: &ShareSettings) -> Changes {
        let Some(slot) = self.slot_mut(offset) else {
            return Changes::default();
        };
        if !matches!(slot.state, SlotState::Acquired { .. }) {
            return Changes::default();
        }
        match ack {
            AckType::Renew => {
                if let SlotState::Acquired { deadline_ms, .. } = &mut slot.state {
                    *deadline_ms = now_ms.saturating_add(s.record_lock_duration_ms);
                }
                Changes::default()
            }
            AckType::Accept => {
                slot.state = SlotState::Acknowledged;
                persist()
            }
            AckType::Gap => {
                slot.state = SlotState::Archived;
                persist()
            }
            AckType::Reject => dead_letter(offset, slot, ArchiveReason::Rejected, now_ms),
            AckType::Release => release(offset, slot, now_ms, s),
        }
    }

    /// Release the locks that expired by `now_ms`.
    pub(crate) fn expire_locks(&mut self, now_ms: i64, s: &ShareSettings) -> Changes {
        self.release_where(now_ms, s, |_, deadline| deadline <= now_ms)
    }

    /// Release every record `member` holds (it left the group or was
    /// fenced).
    pub(crate) fn release_member(
        &mut self,
        member: &str,
        now_ms: i64,
        s: &ShareSettings,
    ) -> Changes {
        self.release_where(now_ms, s, |m, _| m == member)
    }

    fn release_where(
        &mut self,
        now_ms: i64,
        s: &ShareSettings,
        which: impl Fn(&str, i64) -> bool,
    ) -> Changes {
        let mut changes = Changes::default();
        let mut due = i64::MAX;
        for i in 0..self.slots.len() {
            let offset = self.start + i as i64;
            let slot = &mut self.slots[i];
            if let SlotState::Acquired {
                member,
                deadline_ms,
            } = &slot.state
            {
                if which(member, *deadline_ms) {
                    changes.merge(release(offset, slot, now_ms, s));
                } else {
                    due = due.min(*deadline_ms);
                }
            }
        }
        self.locks_due_ms = due;
        self.advance();
        changes
    }

    /// The dead letters of `offsets` are durable: those records are done.
    pub(crate) fn dead_lettered(&mut self, offsets: &[i64]) -> Changes {
        let mut changes = Changes::default();
        for &offset in offsets {
            if let Some(slot) = self.slot_mut(offset)
                && matches!(slot.state, SlotState::DeadLettering { .. })
            {
                slot.state = SlotState::Archived;
                changes.persist = true;
            }
        }
        self.advance();
        changes
    }

    /// Records archived whose dead letters are not confirmed (after a load,
    /// the caller looks for each before writing it again).
    pub(crate) fn pending_dead_letters(&self) -> Vec<DeadLetter> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, slot)| match slot.state {
                SlotState::DeadLettering { reason, since_ms } => Some(DeadLetter {
                    offset: self.start + i as i64,
                    delivery_count: slot.delivery_count,
                    reason,
                    since_ms,
                }),
                _ => None,
            })
            .collect()
    }

    /// Move the start offset to `offset` (the log start passed it, or an
    /// admin reset it): slots below are dropped. Records dead-lettering
    /// there are dropped as well; they are returned, so the caller can
    /// finish their dead letters.
    pub(crate) fn move_start(&mut self, offset: i64) -> Vec<DeadLetter> {
        if offset <= self.start {
            return Vec::new();
        }
        let dropped: Vec<DeadLetter> = self
            .pending_dead_letters()
            .into_iter()
            .filter(|d| d.offset < offset)
            .collect();
        while self.start < offset {
            if self.slots.pop_front().is_none() {
                self.start = offset;
                break;
            }
            self.start += 1;
        }
        self.advance();
        dropped
    }

    /// The durable part: start offset and runs of slot states (acquired
    /// slots as available), with trailing available slots that were never
    /// delivered left out.
    pub(crate) fn persisted(&self) -> PersistedPartition {
        let mut batches: Vec<StateBatch> = Vec::new();
        for (i, slot) in self.slots.iter().enumerate() {
            let offset = self.start + i as i64;
            let state = match slot.state {
                SlotState::Available { .. } | SlotState::Acquired { .. } => {
                    PersistedState::Available
                }
                SlotState::Acknowledged => PersistedState::Acknowledged,
                SlotState::Archived => PersistedState::Archived,
                SlotState::DeadLettering { reason, since_ms } => {
                    PersistedState::DeadLettering { reason, since_ms }
                }
            };
            if state == PersistedState::Available && slot.delivery_count == 0 {
                continue;
            }
            match batches.last_mut() {
                Some(b)
                    if b.last_offset + 1 == offset
                        && b.state == state
                        && b.delivery_count == slot.delivery_count =>
                {
                    b.last_offset = offset;
                }
                _ => batches.push(StateBatch {
                    first_offset: offset,
                    last_offset: offset,
                    state,
                    delivery_count: slot.delivery_count,
                }),
            }
        }
        PersistedPartition {
            start_offset: self.start,
            batches,
        }
    }
}

fn available(delivery_count: u16) -> Slot {
    Slot {
        state: SlotState::Available { at_ms: i64::MIN },
        delivery_count,
    }
}

fn archived(delivery_count: u16) -> Slot {
    Slot {
        state: SlotState::Archived,
        delivery_count,
    }
}

fn persist() -> Changes {
    Changes {
        persist: true,
        dead_letters: Vec::new(),
    }
}

/// Each offset of `b` from `from` on (at most the window's offsets, once
/// the batch is checked to end before the end offset), with its type.
fn acks(b: &AckBatch, from: i64) -> impl Iterator<Item = (i64, AckType)> + '_ {
    (b.first_offset.max(from)..=b.last_offset).map(move |offset| {
        let i = usize::try_from(offset - b.first_offset).unwrap_or(usize::MAX);
        let ack = b.types.get(i).or(b.types.first()).copied();
        (offset, ack.unwrap_or(AckType::Release))
    })
}

/// Release an acquired slot: available again after its backoff, or
/// dead-lettered at the delivery count limit.
fn release(offset: i64, slot: &mut Slot, now_ms: i64, s: &ShareSettings) -> Changes {
    if slot.delivery_count >= s.delivery_count_limit {
        return dead_letter(offset, slot, ArchiveReason::DeliveryLimit, now_ms);
    }
    let backoff = s.backoff_ms(slot.delivery_count);
    slot.state = SlotState::Available {
        at_ms: if backoff > 0 {
            now_ms.saturating_add(backoff)
        } else {
            i64::MIN
        },
    };
    persist()
}

fn dead_letter(offset: i64, slot: &mut Slot, reason: ArchiveReason, now_ms: i64) -> Changes {
    slot.state = SlotState::DeadLettering {
        reason,
        since_ms: now_ms,
    };
    Changes {
        persist: true,
        dead_letters: vec![DeadLetter {
            offset,
            delivery_count: slot.delivery_count,
            reason,
            since_ms: now_ms,
        }],
    }
}

#[cfg(test)]
mod tests;
