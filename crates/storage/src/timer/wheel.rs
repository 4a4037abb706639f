//! The timing wheel: `slots` slots of `slot_ms` each, every slot the head
//! of one backward chain of records in the schedule log. Pure arithmetic
//! and bookkeeping; no I/O.

/// A chain of records in the schedule log, linked backwards: `last` is
/// read first, each record names the one before it, and the record at
/// `first` names none. `first` and `last` mean something only when
/// `count > 0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct ChainRef {
    /// Position of the oldest record (the lowest position of the chain).
    pub first: u64,
    /// Position of the newest record, where a reader starts.
    pub last: u64,
    /// Records in the chain.
    pub count: u64,
}

impl ChainRef {
    /// The `prev` a record appended to this chain names.
    pub fn tail(&self) -> Option<u64> {
        (self.count > 0).then_some(self.last)
    }

    /// Note a record appended at `pos` (which named [`Self::tail`]).
    pub fn push(&mut self, pos: u64) {
        if self.count == 0 {
            self.first = pos;
        }
        self.last = pos;
        self.count += 1;
    }

    /// The lowest log position the chain needs, if it holds any record.
    pub fn lowest(&self) -> Option<u64> {
        (self.count > 0).then_some(self.first)
    }
}

/// One slot of the wheel: the revolution it holds and its chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct Slot {
    /// Start of the slot in the revolution it currently holds (the time it
    /// will next be processed). Meaningful only while the chain is not empty.
    pub time_ms: i64,
    /// The records chained into the slot: its entries due in that
    /// revolution, and entries of later revolutions waiting to be rolled.
    pub chain: ChainRef,
}

/// The wheel: `slots` slots of `slot_ms` milliseconds.
#[derive(Debug)]
pub(super) struct Wheel {
    slot_ms: i64,
    slots: Vec<Slot>,
}

impl Wheel {
    /// An empty wheel. `slot_ms >= 1` and `slots >= 1` (the config was checked).
    pub fn new(slot_ms: i64, slots: u32) -> Self {
        Self {
            slot_ms: slot_ms.max(1),
            slots: vec![Slot::default(); slots.max(1) as usize],
        }
    }

    /// Milliseconds one slot covers.
    pub fn slot_ms(&self) -> i64 {
        self.slot_ms
    }

    /// Slots in the wheel.
    pub fn len(&self) -> u32 {
        self.slots.len() as u32
    }

    /// Milliseconds one revolution covers.
    pub fn revolution_ms(&self) -> i64 {
        self.slot_ms * self.slots.len() as i64
    }

    /// The slot holding time `time_ms`: `(time_ms / slot_ms) mod slots`.
    pub fn index(&self, time_ms: i64) -> usize {
        time_ms
            .div_euclid(self.slot_ms)
            .rem_euclid(self.slots.len() as i64) as usize
    }

    /// The start of the slot-long span holding `time_ms`.
    pub fn slot_start(&self, time_ms: i64) -> i64 {
        time_ms - time_ms.rem_euclid(self.slot_ms)
    }

    /// The time slot `index` is next processed, the cursor being at
    /// `cursor_ms` (a slot start) and the cursor's own slot already loaded
    /// (`cursor_loaded`, its next turn is a revolution on) or not.
    pub fn next_time(&self, index: usize, cursor_ms: i64, cursor_loaded: bool) -> i64 {
        let slots = self.slots.len() as i64;
        let ahead = (index as i64 - self.index(cursor_ms) as i64).rem_euclid(slots);
        let time = cursor_ms + ahead * self.slot_ms;
        if ahead == 0 && cursor_loaded {
            time + self.revolution_ms()
        } else {
            time
        }
    }

    /// Slot `index`.
    pub fn get(&self, index: usize) -> Option<&Slot> {
        self.slots.get(index)
    }

    /// Slot `index`, to change it.
    pub fn get_mut(&mut self, index: usize) -> Option<&mut Slot> {
        self.slots.get_mut(index)
    }

    /// Every slot whose chain holds a record, with its index.
    pub fn used(&self) -> impl Iterator<Item = (usize, &Slot)> {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.chain.count > 0)
    }

    /// The lowest log position any chain needs.
    pub fn lowest_position(&self) -> Option<u64> {
        self.used().filter_map(|(_, s)| s.chain.lowest()).min()
    }

    /// Records in every chain.
    pub fn records(&self) -> u64 {
        // Saturating: counts read from a damaged checkpoint must not
        // overflow; the caller compares the total with the pending counts.
        self.slots
            .iter()
            .fold(0u64, |n, s| n.saturating_add(s.chain.count))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_wrap_every_revolution_and_the_loaded_cursor_slot_is_a_revolution_on() {
        let wheel = Wheel::new(100, 16);
        assert_eq!(wheel.revolution_ms(), 1_600);
        assert_eq!(wheel.index(0), 0);
        assert_eq!(wheel.index(1_599), 15);
        assert_eq!(wheel.index(1_600), 0);
        assert_eq!(wheel.slot_start(1_650), 1_600);
        // Cursor at 3_200 (slot 0): slot 3 comes at 3_500, slot 0 now or a
        // revolution later once loaded.
        assert_eq!(wheel.next_time(3, 3_200, false), 3_500);
        assert_eq!(wheel.next_time(0, 3_200, false), 3_200);
        assert_eq!(wheel.next_time(0, 3_200, true), 4_800);
        // Cursor at 3_700 (slot 5): slot 3 is behind it, so it comes a
        // revolution after its last turn (3_500).
        assert_eq!(wheel.next_time(3, 3_700, false), 5_100);
    }
}
