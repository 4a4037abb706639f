//! The timer store on real files in a temporary folder, with a simulated
//! clock.

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use uuid::Uuid;

use super::format::{RECORD_BYTES, SEGMENT_HEADER_BYTES};
use super::*;
use crate::io::{FileIo, OsIo};

const START_MS: i64 = 1_700_000_000_000;

fn config(slot_ms: i64, slots: u32) -> TimerConfig {
    TimerConfig { slot_ms, slots }
}

/// Segments of 32 records, so tests see segments come and go.
fn small_segments() -> Tuning {
    Tuning {
        segment_bytes: SEGMENT_HEADER_BYTES + 32 * RECORD_BYTES,
        cancels_max: CANCELS_MAX,
    }
}

fn open(dir: &Path, config: TimerConfig, now_ms: i64) -> (TimerStore, Vec<(Uuid, i32, i64)>) {
    TimerStore::open_with(dir, config, now_ms, small_segments(), Arc::new(OsIo)).unwrap()
}

fn entry(due_ms: i64, topic: u128, partition: i32, offset: i64) -> TimerEntry {
    TimerEntry {
        due_ms,
        topic_id: Uuid::from_u128(topic),
        partition,
        offset,
    }
}

fn identity(e: &TimerEntry) -> (Uuid, i32, i64) {
    (e.topic_id, e.partition, e.offset)
}

fn segment_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension() == Some("tlog".as_ref()))
        .count()
}

fn last_segment(dir: &Path) -> std::path::PathBuf {
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension() == Some("tlog".as_ref()))
        .collect();
    paths.sort();
    paths.pop().unwrap()
}

/// Checks every poll: nothing early, keys strictly increasing, and nothing
/// due left behind once a poll returns fewer than it was allowed.
#[derive(Default)]
struct Delivered {
    all: Vec<TimerEntry>,
    seen: HashSet<(Uuid, i32, i64)>,
}

impl Delivered {
    fn poll(&mut self, store: &mut TimerStore, now_ms: i64, max: usize) -> Vec<TimerEntry> {
        let got = store.poll(now_ms, max).unwrap();
        for e in &got {
            assert!(e.due_ms <= now_ms, "{e:?} handed out early, at {now_ms}");
            if let Some(last) = self.all.last() {
                assert!(e > last, "{e:?} handed out after {last:?}");
            }
            assert!(self.seen.insert(identity(e)), "{e:?} handed out twice");
            self.all.push(*e);
        }
        got
    }

    /// Poll until nothing more is due at `now_ms`.
    fn drain(&mut self, store: &mut TimerStore, now_ms: i64) {
        while self.poll(store, now_ms, 1_000).len() == 1_000 {}
    }
}

#[test]
fn entries_come_out_in_due_order_never_early_and_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, progress) = open(dir.path(), config(100, 16), START_MS);
    assert!(progress.is_empty());
    let mut rng = StdRng::seed_from_u64(1);
    let mut added = Vec::new();
    for offset in 0..2_000 {
        // Many ties: due times on a 10 ms grid, a few topics and partitions.
        let due = START_MS + rng.random_range(0..500) * 10;
        let e = entry(due, rng.random_range(1..4), rng.random_range(0..3), offset);
        assert_eq!(store.add(e).unwrap(), e, "nothing to clamp");
        added.push(e);
    }
    assert_eq!(store.pending(), 2_000);
    let mut delivered = Delivered::default();
    let mut now = START_MS;
    while now < START_MS + 5_100 {
        delivered.drain(&mut store, now);
        let late: Vec<_> = added
            .iter()
            .filter(|e| e.due_ms <= now && !delivered.seen.contains(&identity(e)))
            .collect();
        assert!(late.is_empty(), "due at {now} but not handed out: {late:?}");
        now += 7;
    }
    added.sort();
    assert_eq!(
        delivered.all, added,
        "every entry once, by (due, topic, partition, offset)"
    );
    assert_eq!(store.pending(), 0);
}

#[test]
fn ties_come_out_by_topic_then_partition_then_offset() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = open(dir.path(), config(1_000, 8), START_MS);
    let due = START_MS + 1_500;
    let tied = [
        entry(due, 2, 0, 5),
        entry(due, 1, 1, 0),
        entry(due, 1, 0, 9),
        entry(due, 1, 0, 3),
        entry(due - 1, 9, 9, 9),
    ];
    for e in tied {
        store.add(e).unwrap();
    }
    assert!(store.poll(due - 2, 10).unwrap().is_empty());
    assert_eq!(store.poll(due - 1, 10).unwrap(), vec![tied[4]]);
    assert_eq!(
        store.poll(due, 10).unwrap(),
        vec![tied[3], tied[2], tied[1], tied[0]]
    );
}

#[test]
fn entries_many_revolutions_away_are_rolled_and_old_segments_deleted() {
    let dir = tempfile::tempdir().unwrap();
    // A revolution of 1.6 s; entries up to 40 s away (25 revolutions).
    let (mut store, _) = open(dir.path(), config(100, 16), START_MS);
    let mut rng = StdRng::seed_from_u64(2);
    let mut added = Vec::new();
    for offset in 0..1_000 {
        let e = entry(START_MS + rng.random_range(0..40_000), 7, 0, offset);
        store.add(e).unwrap();
        added.push(e);
    }
    store.checkpoint(&[]).unwrap();
    let at_start = segment_files(dir.path());
    assert!(at_start >= 1_000 / 32, "{at_start} segments");
    let mut delivered = Delivered::default();
    let mut most = 0;
    let mut now = START_MS;
    let mut step = 0;
    while now <= START_MS + 40_100 {
        delivered.drain(&mut store, now);
        step += 1;
        if step % 8 == 0 {
            store.checkpoint(&[]).unwrap();
            assert_eq!(segment_files(dir.path()), store.segment_count());
        }
        most = most.max(store.segment_count());
        now += 50;
    }
    added.sort();
    assert_eq!(delivered.all, added);
    // Rolling rewrites what is left once per revolution, and checkpoints
    // delete what no chain needs: the log holds about two revolutions of
    // records (the pending entries and their last roll), far below the
    // ~12,000 records appended (~390 segments).
    assert!(
        most <= 2 * at_start + 4,
        "{most} segments, {at_start} at the start"
    );
    assert!(store.segment_count() <= 2, "{} left", store.segment_count());
}

#[test]
fn crashes_while_rolling_lose_nothing_and_repeat_only_what_followed_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(100, 16);
    let (mut store, _) = open(dir.path(), cfg, START_MS);
    let mut rng = StdRng::seed_from_u64(3);
    let mut everything = HashSet::new();
    for offset in 0..1_000 {
        let e = entry(START_MS + rng.random_range(0..20_000), 7, 0, offset);
        store.add(e).unwrap();
        everything.insert(identity(&e));
    }
    store.checkpoint(&[]).unwrap();
    // What the caller holds: handed out before the last checkpoint (done
    // with), handed out since, and added since (to add again after a crash).
    let mut confirmed: Vec<TimerEntry> = Vec::new();
    let mut since: Vec<TimerEntry> = Vec::new();
    let mut added_since: Vec<TimerEntry> = Vec::new();
    let (mut now, mut step, mut next_offset) = (START_MS, 0, 1_000);
    while now <= START_MS + 20_500 {
        loop {
            let got = store.poll(now, 100).unwrap();
            for e in &got {
                assert!(e.due_ms <= now, "{e:?} early at {now}");
                let last = since.last().or(confirmed.last());
                assert!(last.is_none_or(|l| e > l), "{e:?} after {last:?}");
                since.push(*e);
            }
            if got.len() < 100 {
                break;
            }
        }
        step += 1;
        if step % 3 == 0 {
            // Late: due 5 s ago, into the slot in hand or the next one.
            let e = entry(now - 5_000, 8, 0, next_offset);
            next_offset += 1;
            store.add(e).unwrap();
            everything.insert(identity(&e));
            added_since.push(e);
        }
        if step % 10 == 0 {
            store.checkpoint(&[]).unwrap();
            confirmed.append(&mut since);
            added_since.clear();
        }
        if step % 37 == 0 {
            drop(store);
            store = open(dir.path(), cfg, now).0;
            since.clear();
            for e in &added_since {
                store.add(*e).unwrap();
            }
        }
        now += 50;
    }
    // What the last steps added (or added again).
    let rest = store.poll(now, 1_000).unwrap();
    assert!(
        rest.iter()
            .all(|e| e.due_ms <= now && e.topic_id == Uuid::from_u128(8))
    );
    since.extend(rest);
    let out: Vec<_> = confirmed.iter().chain(&since).map(identity).collect();
    let once: HashSet<_> = out.iter().copied().collect();
    assert_eq!(once.len(), out.len(), "an entry delivered twice");
    assert_eq!(once, everything);
    assert_eq!(store.pending(), 0);
}

#[test]
fn late_and_past_due_entries_are_clamped_after_what_was_handed_out() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = open(dir.path(), config(100, 16), START_MS);
    let a = entry(START_MS + 1_000, 5, 0, 0);
    store.add(a).unwrap();
    assert_eq!(store.poll(START_MS + 1_000, 10).unwrap(), vec![a]);
    // Due long ago, and sorting before `a`: it comes 1 ms after `a`.
    let b = store.add(entry(START_MS - 60_000, 1, 0, 1)).unwrap();
    assert_eq!(b.due_ms, START_MS + 1_001);
    // Due long ago, sorting after `a` at `a`'s due time: clamped to it.
    let c = store.add(entry(0, 9, 0, 2)).unwrap();
    assert_eq!(c.due_ms, START_MS + 1_000);
    // Due later in the same slot, and in a later slot: kept as asked.
    let d = store.add(entry(START_MS + 1_050, 1, 0, 3)).unwrap();
    let e = store.add(entry(START_MS + 2_500, 1, 0, 4)).unwrap();
    assert_eq!((d.due_ms, e.due_ms), (START_MS + 1_050, START_MS + 2_500));
    assert_eq!(store.poll(START_MS + 1_000, 10).unwrap(), vec![c]);
    assert_eq!(store.poll(START_MS + 1_001, 10).unwrap(), vec![b]);
    assert_eq!(store.poll(START_MS + 3_000, 10).unwrap(), vec![d, e]);
    // Once the cursor has moved on, a past-due entry is due at the cursor.
    let f = store.add(entry(START_MS, 1, 0, 5)).unwrap();
    assert_eq!(f.due_ms, store.cursor_ms());
    assert_eq!(store.poll(START_MS + 3_000, 10).unwrap(), vec![f]);
    assert_eq!(store.pending(), 0);
}

#[test]
fn a_crash_reopens_at_the_last_checkpoint_and_hands_out_again_what_followed() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(100, 16);
    let (mut store, _) = open(dir.path(), cfg, START_MS);
    // Five entries in one slot, and more in later ones and revolutions.
    let slot: Vec<_> = (0..5).map(|i| entry(START_MS + 210 + i, 1, 0, i)).collect();
    let later: Vec<_> = (5..40)
        .map(|i| entry(START_MS + 300 + i * 97, 1, 1, i))
        .collect();
    for e in slot.iter().chain(&later) {
        store.add(*e).unwrap();
    }
    // Two handed out from the slot, which stays in hand: then a checkpoint.
    assert_eq!(store.poll(START_MS + 211, 10).unwrap(), slot[..2]);
    let progress = vec![(Uuid::from_u128(1), 0, 5), (Uuid::from_u128(1), 1, 40)];
    store.checkpoint(&progress).unwrap();
    let pending_at_checkpoint = store.pending();
    // After it: more handed out, more added, a cancel; then a crash.
    let after: Vec<_> = store.poll(START_MS + 1_000, 100).unwrap();
    assert_eq!(after.len(), 3 + 3);
    store.add(entry(START_MS + 2_000, 2, 0, 0)).unwrap();
    assert!(store.cancel(Uuid::from_u128(1), 1, 30).unwrap());
    drop(store);

    let (mut store, got) = open(dir.path(), cfg, START_MS + 5_000);
    assert_eq!(got, progress, "the caller's progress map comes back");
    assert_eq!(store.pending(), pending_at_checkpoint);
    assert_eq!(store.pending_in(Uuid::from_u128(2)), 0, "added after: gone");
    assert_eq!(store.cancels_outstanding(), 0, "cancelled after: gone");
    let again = store.poll(START_MS + 1_000, 100).unwrap();
    assert_eq!(again, after, "handed out again, in the same order");
    let rest = store.poll(START_MS + 10_000, 100).unwrap();
    assert_eq!(
        rest,
        later[3..],
        "the cancel after the checkpoint is gone too"
    );
}

#[test]
fn garbage_past_the_checkpointed_end_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(100, 16);
    let (mut store, _) = open(dir.path(), cfg, START_MS);
    for i in 0..10 {
        store.add(entry(START_MS + 500 + i, 1, 0, i)).unwrap();
    }
    store.checkpoint(&[]).unwrap();
    // Unsynced appends after the checkpoint, as a crash leaves them: torn
    // bytes at the end of the last segment, and a segment past it.
    for i in 10..60 {
        store.add(entry(START_MS + 500 + i, 1, 0, i)).unwrap();
    }
    store.log.flush().unwrap();
    drop(store);
    let last = last_segment(dir.path());
    let mut bytes = std::fs::read(&last).unwrap();
    bytes.extend_from_slice(&[0xAB; 20]);
    std::fs::write(&last, &bytes).unwrap();
    assert!(segment_files(dir.path()) >= 2);

    let (mut store, _) = open(dir.path(), cfg, START_MS);
    assert_eq!(segment_files(dir.path()), 1);
    assert_eq!(store.pending(), 10);
    let got = store.poll(START_MS + 1_000, 100).unwrap();
    assert_eq!(
        got.iter().map(|e| e.offset).collect::<Vec<_>>(),
        (0..10).collect::<Vec<_>>()
    );
    // The log goes on where the checkpoint ended.
    store.add(entry(START_MS + 1_500, 1, 0, 99)).unwrap();
    store.checkpoint(&[]).unwrap();
    drop(store);
    let (mut store, _) = open(dir.path(), cfg, START_MS);
    assert_eq!(store.poll(START_MS + 2_000, 10).unwrap().len(), 1);
}

/// A store with one checkpoint holding 10 entries, closed.
fn checkpointed(dir: &Path, cfg: TimerConfig) {
    let (mut store, _) = open(dir, cfg, START_MS);
    for i in 0..10 {
        store.add(entry(START_MS + 500 + i, 1, 0, i)).unwrap();
    }
    store.checkpoint(&[(Uuid::from_u128(1), 0, 10)]).unwrap();
}

fn folder_bytes(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            (p.display().to_string(), std::fs::read(&p).unwrap())
        })
        .collect()
}

fn patch(path: &Path, at: usize, bytes: &[u8]) {
    let mut content = std::fs::read(path).unwrap();
    content[at..at + bytes.len()].copy_from_slice(bytes);
    std::fs::write(path, content).unwrap();
}

fn open_err(dir: &Path, cfg: TimerConfig) -> TimerError {
    TimerStore::open_with(dir, cfg, START_MS, small_segments(), Arc::new(OsIo)).unwrap_err()
}

#[test]
fn a_corrupted_checkpoint_is_refused_and_nothing_changes() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(100, 16);
    checkpointed(dir.path(), cfg);
    patch(&dir.path().join("checkpoint"), 40, &[0xFF]);
    let before = folder_bytes(dir.path());
    let err = open_err(dir.path(), cfg);
    assert!(matches!(err, TimerError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("CRC mismatch"), "{err}");
    assert_eq!(folder_bytes(dir.path()), before);
}

#[test]
fn an_unknown_checkpoint_version_or_magic_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(100, 16);
    checkpointed(dir.path(), cfg);
    let path = dir.path().join("checkpoint");
    patch(&path, 8, &2u32.to_be_bytes());
    let err = open_err(dir.path(), cfg);
    assert!(
        matches!(
            err,
            TimerError::UnsupportedVersion {
                found: 2,
                supported: 1,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("do not downgrade"), "{err}");
    patch(&path, 0, b"NOTTIMER");
    let err = open_err(dir.path(), cfg);
    assert!(matches!(err, TimerError::UnknownMagic { .. }), "{err}");
    assert!(err.to_string().contains("NOTTIMER"), "{err}");
}

#[test]
fn an_unknown_segment_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(100, 16);
    checkpointed(dir.path(), cfg);
    patch(&last_segment(dir.path()), 8, &7u32.to_be_bytes());
    let before = folder_bytes(dir.path());
    let err = open_err(dir.path(), cfg);
    assert!(
        matches!(err, TimerError::UnsupportedVersion { found: 7, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("schedule-log segment"), "{err}");
    assert_eq!(folder_bytes(dir.path()), before);
}

#[test]
fn a_damaged_record_the_checkpoint_vouches_for_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(100, 16);
    checkpointed(dir.path(), cfg);
    let record = SEGMENT_HEADER_BYTES + 3 * RECORD_BYTES + 10;
    patch(&last_segment(dir.path()), record as usize, &[0x55]);
    let err = open_err(dir.path(), cfg);
    assert!(matches!(err, TimerError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("position 144"), "{err}");
}

#[test]
fn another_wheel_than_the_stored_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    checkpointed(dir.path(), config(100, 16));
    let err = open_err(dir.path(), config(100, 32));
    assert!(
        matches!(
            err,
            TimerError::ConfigMismatch {
                stored_slots: 16,
                slots: 32,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("slots = 16"), "{err}");
}

#[test]
fn cancelled_entries_are_skipped_and_counted_when_met() {
    let dir = tempfile::tempdir().unwrap();
    let tuning = Tuning {
        cancels_max: 3,
        ..small_segments()
    };
    let cfg = config(100, 16);
    let (mut store, _) =
        TimerStore::open_with(dir.path(), cfg, START_MS, tuning, Arc::new(OsIo)).unwrap();
    let topic = Uuid::from_u128(1);
    // One in the slot soon in hand, one two revolutions away (met when
    // rolled), one kept.
    let soon = store.add(entry(START_MS + 150, 1, 0, 1)).unwrap();
    let far = store.add(entry(START_MS + 3_350, 1, 0, 2)).unwrap();
    let kept = store.add(entry(START_MS + 3_360, 1, 1, 3)).unwrap();
    store.add(entry(START_MS + 120, 1, 1, 4)).unwrap();
    assert_eq!(store.pending_in(topic), 4);
    assert_eq!(store.pending_in_partition(topic, 0), 2);
    // Load the slot of `soon` into the hand, then cancel.
    assert_eq!(store.poll(START_MS + 120, 10).unwrap().len(), 1);
    assert!(store.cancel(topic, 0, soon.offset).unwrap());
    assert!(store.cancel(topic, 0, far.offset).unwrap());
    assert!(
        store.cancel(topic, 0, far.offset).unwrap(),
        "again: no change"
    );
    assert_eq!(store.cancels_outstanding(), 2);
    assert!(
        !store.cancel(Uuid::from_u128(9), 0, 1).unwrap(),
        "nothing pending there"
    );
    assert!(store.cancel(topic, 1, 77).unwrap());
    let err = store.cancel(topic, 1, 78).unwrap_err();
    assert!(
        matches!(err, TimerError::TooManyCancels { limit: 3 }),
        "{err}"
    );
    // `soon` is met in hand; `far` when its slot rolls it.
    assert!(store.poll(START_MS + 200, 10).unwrap().is_empty());
    assert_eq!(store.pending_in_partition(topic, 0), 1);
    assert!(store.poll(START_MS + 1_700, 10).unwrap().is_empty());
    assert_eq!(store.pending_in_partition(topic, 0), 0);
    // Partition 0 has nothing left: only the cancel of partition 1 waits.
    assert_eq!(store.cancels_outstanding(), 1);
    assert_eq!(store.poll(START_MS + 5_000, 10).unwrap(), vec![kept]);
    assert_eq!(store.pending(), 0);
    assert_eq!(store.cancels_outstanding(), 0, "no entry left to meet");
}

#[test]
fn cancels_survive_a_reopen_at_the_checkpoint_that_holds_them() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(100, 16);
    let (mut store, _) = open(dir.path(), cfg, START_MS);
    let topic = Uuid::from_u128(3);
    for i in 0..4 {
        store.add(entry(START_MS + 110 + i, 3, 0, i)).unwrap();
    }
    assert_eq!(store.poll(START_MS + 110, 10).unwrap().len(), 1);
    assert!(store.cancel(topic, 0, 2).unwrap());
    store.checkpoint(&[]).unwrap();
    drop(store);
    let (mut store, _) = open(dir.path(), cfg, START_MS);
    assert_eq!(store.cancels_outstanding(), 1);
    let got: Vec<i64> = store
        .poll(START_MS + 500, 10)
        .unwrap()
        .iter()
        .map(|e| e.offset)
        .collect();
    assert_eq!(got, vec![1, 3]);
}

#[test]
fn scan_lists_pending_entries_of_a_topic_without_changing_anything() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = open(dir.path(), config(100, 16), START_MS);
    let mut of_topic_2 = Vec::new();
    for i in 0..300 {
        let e = store
            .add(entry(
                START_MS + 100 + (i * 7_919) % 9_000,
                1 + (i % 3) as u128,
                0,
                i,
            ))
            .unwrap();
        if e.topic_id == Uuid::from_u128(2) {
            of_topic_2.push(e);
        }
    }
    // Part of it in hand.
    let handed = store.poll(START_MS + 150, 1_000).unwrap();
    of_topic_2.retain(|e| !handed.contains(e));
    of_topic_2.sort();
    assert!(
        store
            .cancel(Uuid::from_u128(2), 0, of_topic_2[3].offset)
            .unwrap()
    );
    let cancelled = of_topic_2.remove(3);
    let pending = store.pending();
    let log_end = store.log.end();

    let topic = Uuid::from_u128(2);
    let all = store
        .scan(|e| e.topic_id == topic, usize::MAX, u64::MAX)
        .unwrap();
    assert!(all.complete);
    assert_eq!(all.entries, of_topic_2);
    assert_eq!(all.matched, of_topic_2.len() as u64);
    assert!(!all.entries.contains(&cancelled));
    // The next due time of topic 2: the first result.
    let next = store.scan(|e| e.topic_id == topic, 1, u64::MAX).unwrap();
    assert_eq!(next.entries, of_topic_2[..1]);
    assert_eq!(next.matched, of_topic_2.len() as u64);
    // Bounded reads: an incomplete answer, all of it true.
    let part = store.scan(|e| e.topic_id == topic, usize::MAX, 20).unwrap();
    assert!(!part.complete);
    assert!(part.entries.iter().all(|e| of_topic_2.contains(e)));
    assert!(part.entries.len() < of_topic_2.len());
    assert_eq!((store.pending(), store.log.end()), (pending, log_end));
}

#[test]
fn earliest_stops_at_the_first_slot_that_holds_nothing_earlier() {
    let dir = tempfile::tempdir().unwrap();
    // 16 slots of 100 ms: entries over several revolutions.
    let (mut store, _) = open(dir.path(), config(100, 16), START_MS);
    let mut all = Vec::new();
    for i in 0..2_000 {
        let due = START_MS + 100 + (i * 7_919) % 20_000;
        all.push(store.add(entry(due, 1 + (i % 2) as u128, 0, i)).unwrap());
    }
    let topic = Uuid::from_u128(1);
    let mut of_topic: Vec<TimerEntry> = all
        .iter()
        .filter(|e| e.topic_id == topic)
        .copied()
        .collect();
    of_topic.sort();
    for want in [1, 5, 50] {
        let full = store.scan(|e| e.topic_id == topic, want, u64::MAX).unwrap();
        let early = store
            .earliest(|e| e.topic_id == topic, want, u64::MAX)
            .unwrap();
        assert_eq!(early.entries, of_topic[..want], "the same earliest {want}");
        assert_eq!(full.entries, early.entries);
        assert!(early.complete);
        assert!(
            early.matched < full.matched,
            "stopped early: met {} of {}",
            early.matched,
            full.matched
        );
    }
    // Fewer than asked: every slot is read.
    let none = store.earliest(|e| e.topic_id == Uuid::from_u128(9), 1, u64::MAX);
    assert_eq!(none.unwrap().entries, []);
}

#[test]
fn contains_finds_a_pending_entry_by_its_record_until_handed_out_or_cancelled() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = open(dir.path(), config(100, 16), START_MS);
    let topic = Uuid::from_u128(1);
    let soon = store.add(entry(START_MS + 150, 1, 0, 1)).unwrap();
    // Three revolutions away, in the same slot as `soon`.
    let later = store.add(entry(START_MS + 150 + 4_800, 1, 0, 2)).unwrap();
    let other = store.add(entry(START_MS + 990, 1, 0, 3)).unwrap();
    for e in [soon, later, other] {
        assert!(
            store.contains(topic, 0, e.offset, e.due_ms).unwrap(),
            "{e:?}"
        );
    }
    assert!(!store.contains(topic, 0, 9, START_MS + 150).unwrap());
    assert!(!store.contains(topic, 1, 1, START_MS + 150).unwrap());
    // Added late: placed at the cursor, found by its old due time too.
    store.poll(START_MS + 120, 10).unwrap();
    let late = store.add(entry(START_MS - 5_000, 1, 0, 4)).unwrap();
    assert!(
        store.contains(topic, 0, 4, START_MS - 5_000).unwrap(),
        "{late:?}"
    );
    // Handed out: no longer pending.
    let handed = store.poll(START_MS + 200, 10).unwrap();
    assert!(handed.iter().any(|e| e.offset == 1), "{handed:?}");
    assert!(!store.contains(topic, 0, 1, soon.due_ms).unwrap());
    assert!(store.contains(topic, 0, 2, later.due_ms).unwrap());
    // Cancelled: no longer pending, though not met yet.
    assert!(store.cancel(topic, 0, 3).unwrap());
    assert!(!store.contains(topic, 0, 3, other.due_ms).unwrap());
    assert_eq!(store.cancels_in_partition(topic, 0), 1);
    assert_eq!(store.cancels_in_partition(topic, 1), 0);
}

#[test]
fn two_hundred_thousand_entries_on_a_small_wheel_come_out_once_in_order() {
    let dir = tempfile::tempdir().unwrap();
    // A revolution of 640 ms; due times over about 8 revolutions.
    let cfg = config(10, 64);
    let tuning = Tuning {
        segment_bytes: 1 << 20,
        cancels_max: CANCELS_MAX,
    };
    let (mut store, _) =
        TimerStore::open_with(dir.path(), cfg, START_MS, tuning, Arc::new(OsIo)).unwrap();
    let mut rng = StdRng::seed_from_u64(200);
    let mut per_slot: BTreeMap<i64, usize> = BTreeMap::new();
    let n = 200_000;
    for offset in 0..n {
        let due = START_MS + rng.random_range(0..5_000);
        let e = entry(due, rng.random_range(0..4), rng.random_range(0..8), offset);
        store.add(e).unwrap();
        *per_slot.entry(due / 10).or_default() += 1;
    }
    assert_eq!(store.pending(), n as u64);
    let mut delivered = Delivered::default();
    let mut now = START_MS;
    let mut step = 0;
    while now <= START_MS + 5_010 {
        delivered.drain(&mut store, now);
        step += 1;
        if step % 25 == 0 {
            store.checkpoint(&[]).unwrap();
        }
        now += 3;
    }
    assert_eq!(delivered.all.len(), n as usize);
    assert_eq!(store.pending(), 0);
    let most_in_a_slot = per_slot.values().copied().max().unwrap();
    assert!(
        store.hand_high_water() <= most_in_a_slot,
        "{} in hand, at most {most_in_a_slot} in one slot",
        store.hand_high_water()
    );
    store.checkpoint(&[]).unwrap();
    assert!(store.segment_count() <= 1, "{}", store.segment_count());
}

/// Fails every fdatasync once told to.
#[derive(Default)]
struct FailingSync(AtomicBool);

impl FileIo for FailingSync {
    fn sync_data(&self, file: &File) -> io::Result<()> {
        if self.0.load(Ordering::SeqCst) {
            return Err(io::Error::other("injected fdatasync failure"));
        }
        file.sync_data()
    }
}

#[test]
fn a_failed_fsync_poisons_the_store_and_the_last_checkpoint_stays() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(100, 16);
    let io = Arc::new(FailingSync::default());
    let (mut store, _) =
        TimerStore::open_with(dir.path(), cfg, START_MS, small_segments(), io.clone()).unwrap();
    store.add(entry(START_MS + 500, 1, 0, 0)).unwrap();
    store.checkpoint(&[]).unwrap();
    store.add(entry(START_MS + 600, 1, 0, 1)).unwrap();
    io.0.store(true, Ordering::SeqCst);
    let err = store.checkpoint(&[]).unwrap_err();
    assert!(
        err.to_string().contains("injected fdatasync failure"),
        "{err}"
    );
    let err = store.add(entry(START_MS + 700, 1, 0, 2)).unwrap_err();
    assert!(matches!(err, TimerError::Poisoned { .. }), "{err}");
    assert!(matches!(
        store.poll(START_MS + 1_000, 10),
        Err(TimerError::Poisoned { .. })
    ));
    drop(store);
    let (store, _) = open(dir.path(), cfg, START_MS);
    assert_eq!(store.pending(), 1);
}

#[test]
fn a_fresh_store_without_a_checkpoint_drops_segments_of_an_earlier_run() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(100, 16);
    let (mut store, _) = open(dir.path(), cfg, START_MS);
    for i in 0..100 {
        store.add(entry(START_MS + 500, 1, 0, i)).unwrap();
    }
    store.log.flush().unwrap();
    drop(store);
    assert!(segment_files(dir.path()) > 1);
    let (store, progress) = open(dir.path(), cfg, START_MS + 123);
    assert!(progress.is_empty());
    assert_eq!((store.pending(), segment_files(dir.path())), (0, 0));
    assert_eq!(store.cursor_ms(), START_MS + 100);
}

#[test]
fn checkpoint_bytes_round_trip() {
    let cp = Checkpoint {
        slot_ms: 1_000,
        slots: 1 << 17,
        cursor_ms: START_MS,
        log_end: 4_800,
        last_returned: Some(entry(START_MS + 5, 1, 2, 3)),
        hand: Some(HandRef {
            time_ms: START_MS,
            chain: ChainRef {
                first: 0,
                last: 96,
                count: 3,
            },
            remaining: 2,
        }),
        used_slots: vec![(
            7,
            Slot {
                time_ms: START_MS + 7_000,
                chain: ChainRef {
                    first: 48,
                    last: 4_752,
                    count: 9,
                },
            },
        )],
        pending: vec![(Uuid::from_u128(1), 2, 11)],
        cancels: vec![(Uuid::from_u128(1), 2, 40)],
        progress: vec![(Uuid::from_u128(5), 0, 1_000)],
    };
    let bytes = cp.encode();
    assert_eq!(bytes.len(), 144 + 40 + 3 * 32 + 4);
    assert_eq!(Checkpoint::decode(&bytes).unwrap(), cp);
    for cut in [0, 12, 143, bytes.len() - 1] {
        assert!(Checkpoint::decode(&bytes[..cut]).is_err(), "cut at {cut}");
    }
}

#[test]
fn a_checkpoint_that_disagrees_with_its_chains_is_refused_before_anything_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(100, 16);
    let (mut store, _) = open(dir.path(), cfg, START_MS);
    for i in 0..5 {
        store.add(entry(START_MS + 110 + i, 1, 0, i)).unwrap();
    }
    assert_eq!(store.poll(START_MS + 111, 10).unwrap().len(), 2);
    store.checkpoint(&[]).unwrap();
    // A tail past the checkpoint, which a good open would cut.
    store.add(entry(START_MS + 900, 1, 0, 9)).unwrap();
    store.log.flush().unwrap();
    drop(store);
    // Well-formed, CRC-valid, but the hand claims one entry too many.
    let path = dir.path().join("checkpoint");
    let mut cp = Checkpoint::decode(&std::fs::read(&path).unwrap()).unwrap();
    let hand = cp.hand.as_mut().unwrap();
    assert_eq!(hand.remaining, 3);
    hand.remaining = 4;
    cp.pending[0].2 += 1;
    std::fs::write(&path, cp.encode()).unwrap();
    let before = folder_bytes(dir.path());
    let err = open_err(dir.path(), cfg);
    assert!(matches!(err, TimerError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("3 entries left"), "{err}");
    assert_eq!(folder_bytes(dir.path()), before, "nothing cut or removed");
}
